from .attention import attention, attention_jvp, attention_jvp_math, attention_math

__all__ = ["attention", "attention_jvp", "attention_jvp_math", "attention_math"]
