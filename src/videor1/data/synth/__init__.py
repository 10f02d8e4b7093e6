"""The synthetic video dataset: tasks (questions over rendered motion), render (frames -> mp4), build."""
