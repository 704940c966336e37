"""The endpoint the legacy factory calls back when production is done."""

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from factory_bridge.services.restock import receive_callback


class FactoryCallbackApi(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, token: str) -> Response:
        restock, added = receive_callback(token=token, body=request.data)
        return Response(
            {
                "message": f"입고 완료! 남은 재고: {restock.product.stock}",
                "restock_id": restock.pk,
                "added": restock.quantity if added else 0,
                "stock": restock.product.stock,
            }
        )
