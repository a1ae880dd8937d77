from django.db import models


class Record(models.Model):
    """A row a task (or a view) writes, so tests can see what ran and in which order."""

    label = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
