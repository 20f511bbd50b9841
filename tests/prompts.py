"""Fixed chat prompts for the end-to-end truths (no download, no eval package needed)."""

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for better sleep.",
    "What is 17 times 23?",
    "Write a Python function that reverses a string.",
    "Translate 'good morning' into Spanish and German.",
    "Who wrote Pride and Prejudice?",
    "Summarize the plot of Romeo and Juliet in one paragraph.",
    "What are the primary colors?",
    "How do I make a cup of tea?",
    "List five animals that live in the ocean.",
    "Why is the sky blue?",
    "Write a short limerick about a cat.",
    "What is the difference between a list and a tuple in Python?",
    "Describe the water cycle.",
    "Suggest a name for a coffee shop.",
    "What does HTTP stand for?",
    "Give an example of a prime number greater than 100.",
    "How many continents are there? Name them.",
]


def chat_ids(tokenizer, content: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)
