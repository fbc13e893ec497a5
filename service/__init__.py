"""The use cases that HTTP (`api`) and the Celery worker (`workers`) both call: settings, the catalog
(base models, datasets), the artifact store and the registration of a stored artifact, job specs and
submission. It uses `registry_db` and `composer`, and never imports `api`, `workers`, FastAPI or Celery."""
