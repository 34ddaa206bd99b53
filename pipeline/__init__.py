"""tess-pipeline: TASOC photometry of TESS Full-Frame Images on Dask.

    import pipeline
    job = pipeline.submit(["sector14/"])     # the whole run as one Dask graph
    job.result()
"""

__version__ = "0.1.0"

__all__ = ["submit", "resume", "request_cancel", "__version__"]


def __getattr__(name):
    # the graph pulls in every stage; `import pipeline` alone stays light
    if name in ("submit", "resume", "request_cancel", "Job", "RunReport"):
        from pipeline import jobs as graph

        return getattr(graph, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
