"""The provider API: tenant authentication (JWT) and the FastAPI app."""
