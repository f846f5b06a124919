"""Flow steps on Celery workers over Redis: the backend's executor and the worker's side.

Only :mod:`~workspace_adapter.cluster.brokerurl` and
:mod:`~workspace_adapter.cluster.invocation` load without the ``celery`` extra; everything
else is imported by ``workspace worker`` and the backend's Celery executor alone.
"""
