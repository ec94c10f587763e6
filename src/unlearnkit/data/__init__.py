"""Data: QA records, the TOFU loader, the synthetic related-knowledge generator, tokenisation."""
from .collate import IGNORE, PromptFormat, QACollator, QADataset, encode_prompt, encode_qa, pad_batch
from .records import DataError, QARecord, read_qa_jsonl, write_qa_jsonl
from .synthetic import RelatedKnowledgeSet, generate_related_knowledge
from .tofu import load_tofu, retain_split_for, holdout_split_for

__all__ = ["IGNORE", "PromptFormat", "QACollator", "QADataset", "encode_prompt", "encode_qa", "pad_batch",
           "DataError", "QARecord", "read_qa_jsonl", "write_qa_jsonl", "RelatedKnowledgeSet",
           "generate_related_knowledge", "load_tofu", "retain_split_for", "holdout_split_for"]
