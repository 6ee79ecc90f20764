"""Evaluation on the long-video benchmarks from local files: readers for the released layouts (`readers`), answer
letters (`letters`), clustered and paired statistics (`stats`), and the runner behind ``longvid eval NAME``
(`runner`)."""
