"""An OpenAI-compatible HTTP server over app.engine (`docgen serve`, `python -m app.serve`).

Imports app.engine and app.llm.engine_thread (the one driver of the engine's step loop), never
app.docgen. FastAPI + uvicorn come from the optional extra `serve` (pip install '.[serve]').
"""
