"""django-oscar, unchanged, as a merchant runs it: a minimal Django project."""
