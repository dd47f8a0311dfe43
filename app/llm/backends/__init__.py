"""DocGenerator backends beyond the in-process engine: `openai_client` (any OpenAI-compatible server)."""
