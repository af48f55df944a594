"""The release report: one candidate's story from its training data to its promotion, in one HTML file."""
