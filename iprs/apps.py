from django.apps import AppConfig


class IprsConfig(AppConfig):
    name = "iprs"
