"""The models layer behind models.py: pydantic models, typed approval payloads, status rules,
settings and DAG helpers. Import them through the door, `models`."""
