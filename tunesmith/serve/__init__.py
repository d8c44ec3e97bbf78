"""The OpenAI-compatible HTTP API (FastAPI + uvicorn), serving one inference engine."""
