"""HTML pages for people: thin views over the selectors and services."""
