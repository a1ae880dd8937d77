"""Django's Tasks API decorator: django.tasks on Django 6, the django-tasks backport on 5.2."""

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

__all__ = ["task"]
