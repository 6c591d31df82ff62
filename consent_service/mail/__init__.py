"""Email without the application: composing messages from templates, and the file and memory backends."""
