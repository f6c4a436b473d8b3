"""The web layer both apps share: who may do what, API schema pieces and renderers,
absolute links, and how the admin shows statuses and moments.

``reports`` and ``runs`` import from here, never each other's web modules, so their
views, serializers and admin depend on one another only through models and services.
"""
