from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("my-data/", views.my_data, name="my_data"),
    path("my-data/download/", views.my_data_download, name="my_data_download"),
    path("my-data/erase/", views.account_erase, name="erase"),
]
