"""edge-runner: convert models for the edge and serve them over KServe v2 and the OpenAI API."""

__version__ = "0.1.0"
