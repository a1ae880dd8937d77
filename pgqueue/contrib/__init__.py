"""Integrations with web frameworks (``pgqueue.contrib.django``).

Nothing here is imported by pgqueue itself: each integration imports its
framework, which stays an optional dependency.
"""
