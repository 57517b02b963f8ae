"""Real documents available offline: Python's own help topics and module docs,
plus a handful of Chinese articles, so the demo indexes text people can search."""

from __future__ import annotations

import ast
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

PART_CHARACTERS = 1500

CHINESE_DOCUMENTS: list[tuple[str, str]] = [
    (
        "变更数据捕获",
        "变更数据捕获（CDC）是一种跟踪数据库中数据变化的技术。它读取数据库自身的变更日志，"
        "而不是依赖应用程序发布事件。这样即使某个代码路径忘记发布事件，下游系统也不会漏掉变化。"
        "MongoDB 通过变更流提供这种能力；每个事件都带有一个恢复令牌，消费者可以从令牌处继续读取。",
    ),
    (
        "向量检索",
        "向量检索把文本转换为高维向量，再根据向量之间的相似度查找最相关的内容。"
        "检索增强生成（RAG）系统先从向量库中找到相关片段，再把它们交给大语言模型生成回答。"
        "如果索引与数据源不一致，模型就会引用过时或已删除的内容。",
    ),
    (
        "Redis 持久化队列",
        "Redis Stream 是一种只追加的日志结构，适合做持久化队列。"
        "消费者组会记录每个消费者已读取但尚未确认的条目。"
        "进程崩溃后，未确认的条目会重新投递，因此不会丢失任何工作。确认操作应当在写入成功之后进行。",
    ),
    (
        "故宫",
        "北京故宫是中国明清两代的皇家宫殿，旧称紫禁城，位于北京中轴线的中心。"
        "故宫以三大殿为中心，占地面积约七十二万平方米，建筑面积约十五万平方米。"
        "它是世界上现存规模最大、保存最为完整的木质结构古建筑之一，现为故宫博物院。",
    ),
    (
        "长城",
        "长城是中国古代的军事防御工程，修筑历史可上溯到西周时期。"
        "秦朝统一六国后，把各国长城连接起来，形成了万里长城。现存的长城大多是明代修建的。"
        "长城于一九八七年被列入世界文化遗产名录。",
    ),
    (
        "茶文化",
        "中国是茶的故乡，饮茶的历史已有数千年。茶叶按照加工方法可以分为绿茶、红茶、乌龙茶、白茶、黄茶和黑茶。"
        "唐代陆羽所著的《茶经》是世界上第一部关于茶的专著。泡茶时，水温、器具和时间都会影响茶汤的味道。",
    ),
    (
        "熊猫",
        "大熊猫是中国特有的哺乳动物，主要生活在四川、陕西和甘肃的山区。"
        "它们的食物几乎全部是竹子，每天要花十几个小时进食。"
        "经过多年的保护，大熊猫的受威胁等级已从濒危降为易危。",
    ),
    (
        "春节",
        "春节是中国最重要的传统节日，时间在农历正月初一。"
        "节日前人们打扫房屋、贴春联、置办年货；除夕夜全家团聚吃年夜饭，守岁迎接新年。"
        "春节期间还有拜年、发红包、放鞭炮、舞龙舞狮等习俗。",
    ),
    (
        "Kubernetes 边车",
        "边车容器与主容器运行在同一个 Pod 中，共享网络和存储卷。"
        "它常用于日志收集、代理和数据同步等辅助任务。边车与主应用一起部署、一起扩缩容，"
        "运维人员可以独立升级它，而不需要修改主应用的代码。",
    ),
    (
        "监控与告警",
        "Prometheus 定期抓取服务暴露的指标，并根据告警规则触发通知。"
        "对于数据同步服务，最重要的指标是延迟和队列长度：延迟持续升高说明处理速度跟不上写入速度。"
        "值班工程师收到告警后，应先查看队列积压，再检查下游服务是否可用。",
    ),
    (
        "文本分块",
        "嵌入模型一次只能处理有限长度的文本，因此长文档需要先切分成较小的片段。"
        "中文句子以句号、问号、感叹号或分号结束，按这些标点切分可以让每个片段保持完整的语义。"
        "片段之间保留少量重叠，可以避免关键信息被切断。",
    ),
    (
        "西湖",
        "杭州西湖三面环山，湖中有白堤和苏堤两条长堤。"
        "苏轼曾写下“欲把西湖比西子，淡妆浓抹总相宜”的诗句。"
        "西湖十景包括断桥残雪、平湖秋月、雷峰夕照等，二零一一年西湖被列入世界遗产名录。",
    ),
]

NEW_DOCUMENTS: list[dict[str, str]] = [
    {
        "_id": "zh-new-1",
        "title": "黄山",
        "lang": "zh",
        "source": "demo",
        "content": "黄山位于安徽南部，以奇松、怪石、云海和温泉闻名。"
        "明代旅行家徐霞客曾两次登临黄山。",
    },
    {
        "_id": "zh-new-2",
        "title": "丝绸之路",
        "lang": "zh",
        "source": "demo",
        "content": "丝绸之路是古代连接中国与地中海的贸易路线。"
        "商人们沿着这条路运输丝绸、瓷器和香料。",
    },
    {
        "_id": "en-new-1",
        "title": "Vector indexes",
        "lang": "en",
        "source": "demo",
        "content": "A vector index stores embeddings so nearest neighbours are found fast.",
    },
    {
        "_id": "en-new-2",
        "title": "Resume tokens",
        "lang": "en",
        "source": "demo",
        "content": "A change stream resume token marks a position in the oplog to continue after.",
    },
    {
        "_id": "en-new-3",
        "title": "Backpressure",
        "lang": "en",
        "source": "demo",
        "content": "Backpressure slows a producer down when its consumer cannot keep up.",
    },
]
"""Documents the demo inserts while the sidecar runs."""


def _parts(text: str) -> Iterator[str]:
    """Split at paragraph boundaries into pieces of about PART_CHARACTERS."""
    piece: list[str] = []
    size = 0
    for paragraph in text.split("\n\n"):
        if piece and size + len(paragraph) > PART_CHARACTERS:
            yield "\n\n".join(piece)
            piece, size = [], 0
        piece.append(paragraph)
        size += len(paragraph) + 2
    if piece:
        yield "\n\n".join(piece)


def _module_docs() -> Iterator[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(sys.stdlib_module_names):
        path = stdlib / f"{name}.py"
        if name.startswith("_") or not path.is_file():
            path = stdlib / name / "__init__.py"
        if name.startswith("_") or not path.is_file():
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError):
            continue
        if doc and len(doc) > 200:
            yield f"The {name} module", doc[:PART_CHARACTERS]


def documents(limit: int) -> list[dict[str, Any]]:
    """Up to *limit* documents ({_id, title, content, lang, source}); the Chinese come first."""
    docs: list[dict[str, Any]] = [
        {"_id": f"zh-{i}", "title": title, "content": body, "lang": "zh", "source": "demo"}
        for i, (title, body) in enumerate(CHINESE_DOCUMENTS)
    ]
    english: list[tuple[str, str, str]] = []
    for topic, text in sorted(topics.items()):
        for number, part in enumerate(_parts(text.strip())):
            if number < 4:
                english.append((f"topic-{topic}-{number}", f"Python: {topic}", part))
    english += [(f"module-{title.split()[1]}", title, doc) for title, doc in _module_docs()]
    for _id, title, content in english[: max(0, limit - len(docs))]:
        docs.append(
            {"_id": _id, "title": title, "content": content, "lang": "en", "source": "python-docs"}
        )
    return docs
