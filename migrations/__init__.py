"""Alembic migrations, shipped inside the distribution so an installed gateway can migrate.

``service.db.engine`` finds this folder through the import system (a non-editable install puts
it in site-packages; it used to look for ``<site-packages>/../migrations`` and failed).
"""
