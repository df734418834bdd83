"""The study's report: tables, figures, the audit of one scan, the README's demo results."""
