"""Banking77 with GPT-4 answers, the data ``understudy demo`` replays (see LICENCE.md)."""
