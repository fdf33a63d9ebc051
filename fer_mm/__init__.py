"""fer-mm: audio-visual emotion recognition on CREMA-D."""

__version__ = "0.1.0"
