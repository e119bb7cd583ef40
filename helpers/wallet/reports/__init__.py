"""Reading the books: exports, totals, what is pending."""
