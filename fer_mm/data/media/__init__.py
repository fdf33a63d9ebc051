"""Reading media: audio, video and the faces in it."""
