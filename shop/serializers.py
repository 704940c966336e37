from django.conf import settings
from rest_framework import serializers

from inventory.models import Product


class ProductSerializer(serializers.ModelSerializer):
    in_stock = serializers.BooleanField(read_only=True)
    incoming = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "stock", "in_stock", "incoming"]


class OrderInputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=32)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    quantity = serializers.IntegerField()
    status = serializers.CharField()
    remaining_stock = serializers.IntegerField()


class OutOfStockSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    available = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
