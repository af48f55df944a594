"""A/B routes: a stable public name split by weight over versions, with sticky assignment."""
