"""The Sales API: thin views over the shop services and inventory selectors."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.selectors import product_get, product_list
from shop.limits import OrderRateThrottle, api_customer
from shop.models import Order
from shop.serializers import (
    ErrorSerializer,
    OrderInputSerializer,
    OrderOutputSerializer,
    OutOfStockSerializer,
    ProductSerializer,
)
from shop.services import place_order


class ProductListApi(APIView):
    @extend_schema(responses=ProductSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ProductSerializer(product_list(), many=True).data)


class ProductDetailApi(APIView):
    @extend_schema(responses={200: ProductSerializer, 404: ErrorSerializer})
    def get(self, request: Request, sku: str) -> Response:
        return Response(ProductSerializer(product_get(sku=sku)).data)


class OrderCreateApi(APIView):
    throttle_classes = [OrderRateThrottle]

    @extend_schema(
        request=OrderInputSerializer,
        responses={
            201: OrderOutputSerializer,
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: OutOfStockSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = OrderInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = place_order(
            **data.validated_data, channel=Order.Channel.API, customer=api_customer(request)
        )
        order = result.order
        # The body is built from known ints and strings: OrderOutputSerializer documents it.
        body = {
            "id": order.pk,
            "sku": result.sku,
            "quantity": order.quantity,
            "status": order.status,
            "remaining_stock": result.remaining_stock,
        }
        return Response(body, status=status.HTTP_201_CREATED)
