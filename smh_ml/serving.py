"""Loader of classifiers registered before the deploy package existed.

Their MLmodel files name ``smh_ml.serving`` as the pyfunc loader module; new registrations
name ``smh_ml.deploy.pyfunc`` (``smh_ml.tracking.tracker.PYFUNC_LOADER``). Kept so that those
registered versions still serve.
"""

from smh_ml.deploy.pyfunc import _load_pyfunc

__all__ = ["_load_pyfunc"]
