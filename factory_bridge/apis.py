"""The endpoint the legacy factory calls back when production is done."""

from drf_spectacular.utils import OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from factory_bridge.services.restock.callback import callback_restock_id, receive_callback


class CallbackOutputSerializer(serializers.Serializer):
    message = serializers.CharField()
    restock_id = serializers.IntegerField()
    added = serializers.IntegerField(help_text="Units added now; 0 for a repeated callback")
    stock = serializers.IntegerField()


class CallbackErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class FactoryCallbackApi(APIView):
    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={
            200: OpenApiResponse(
                CallbackOutputSerializer,
                description="Stock added, or a repeated callback that adds nothing.",
            ),
            400: OpenApiResponse(
                CallbackErrorSerializer,
                description="`invalid`: the body is not the echo of the order we placed.",
            ),
            403: OpenApiResponse(
                CallbackErrorSerializer,
                description="`forbidden`: a token we did not sign; `expired`: older than "
                "FACTORY_CALLBACK_MAX_AGE. The body is not read.",
            ),
            409: OpenApiResponse(
                CallbackErrorSerializer,
                description="`restock_failed`: the restock request has failed; nothing added.",
            ),
        },
    )
    def post(self, request: Request, token: str) -> Response:
        # The token first: a forged or expired one is refused before the body is parsed.
        restock_id = callback_restock_id(token=token)
        restock, added = receive_callback(restock_id=restock_id, body=request.data)
        return Response(
            {
                "message": f"입고 완료! 남은 재고: {restock.product.stock}",
                "restock_id": restock.pk,
                "added": restock.quantity if added else 0,
                "stock": restock.product.stock,
            }
        )
