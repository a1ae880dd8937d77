from django.contrib import admin

from shop.models import Order, SalesReport

admin.site.register(Order)
admin.site.register(SalesReport)
