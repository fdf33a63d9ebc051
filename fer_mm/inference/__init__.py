"""A trained model on new files and live sources, and its export: the top layer, nothing below imports it.

- ``model``: a checkpoint or exported ONNX file loaded with its preprocessing, inputs and face detectors
- ``readings``: what the network's outputs say of a face (emotion, P(male), age), means, smoothing over time
- ``media``: a new file decoded and checked as training checks a clip; one clip's item for the network
- ``windows``: the rolling windows a file's timeline and a live source both go through
- ``sources``: the files an ``input`` names
- ``outputs``: the rows of the tables, the timeline plot and the annotated copies
- ``recognizer``: :class:`~fer_mm.inference.recognizer.Recognizer`, one file at a time
- ``predict``: ``python -m fer_mm.predict``; ``stream``: its live sources; ``export``: ``python -m fer_mm.export``
"""
