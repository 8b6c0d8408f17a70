"""GSM8K data: problems and splits, final answers, and the annotation calculator."""
