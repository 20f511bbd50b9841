"""drafts package."""
