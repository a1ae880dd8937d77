from django.contrib import admin
from django.urls import path

from tests.django.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("signup/", views.signup),
]
