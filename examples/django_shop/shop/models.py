from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=254)
    item = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    # The confirmation email's job, to show its state on the order page.
    email_job_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"order {self.id}: {self.quantity} x {self.item} for {self.email}"


class SalesReport(models.Model):
    day = models.DateField(unique=True)
    orders = models.PositiveIntegerField()
    units = models.PositiveIntegerField()
    built_at = models.DateTimeField(auto_now=True)
