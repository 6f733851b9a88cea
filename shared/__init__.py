"""ai_video_bot: the package that the webhook and the worker both import."""
