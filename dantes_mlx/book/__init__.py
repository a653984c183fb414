"""Getting the book: download or copy Project Gutenberg ebooks, then clean them into one paragraph per line."""
