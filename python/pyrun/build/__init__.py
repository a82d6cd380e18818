"""`pyrun build`: Dockerfiles into images."""
