"""Where samples come from: each dataset's index in its released layout."""
