"""Importing this module leaves a mark in the test database: a worker must never import it.

It is outside every installed app, so a job row naming ``tests.django.side_effect.task``
is an unknown task to the worker, not a reason to run this code (test_worker.py).
"""

import os

import psycopg

with psycopg.connect(os.environ["PGQUEUE_DJANGO_TEST_DSN"], autocommit=True) as connection:
    connection.execute("INSERT INTO testapp_record (label, created_at) VALUES ('imported', now())")

task = None
