"""The clean job's exact-type JSON parse as one Java function: compiled at first use, added to the Spark application.

``jobs/jvm/ExactJsonFields.java`` reads a raw line once with Jackson (the parser behind Spark's own VARIANT parse) and
returns whether it is one JSON object and, per raw field, its exact JSON type and text: what :func:`jobs.clean.parse`
otherwise builds from a VARIANT parse, a ``schema_of_variant`` per field and a ``json_tuple`` pass, several times
faster (docs/benchmarks.md#etl). Nothing to install: :func:`register` compiles the source with the compiler module of
the JVM that runs Spark (``java -m jdk.compiler/...``: Debian's ``openjdk-17-jre-headless`` holds it, no JDK
needed) into ``ATTNREC_SPARK_UDF_DIR`` once per source and Spark version, adds the jar to the application
(``ADD JAR``: the driver serves it to the executors, on a cluster too) and registers the function. Where it cannot (no
compiler module, a read-only directory, ``ATTNREC_SPARK_UDF_DIR=none``) it says why once and the clean job parses
with Spark SQL alone: slower, the same outcome (tests/test_exact_json.py holds both to it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

#: The function's name in Spark SQL and its Java class.
FUNCTION = "attnrec_exact_json_fields"
JAVA_CLASS = "attnrec.spark.ExactJsonFields"
SOURCE = Path(__file__).resolve().parent / "jvm" / "ExactJsonFields.java"
#: The session setting :func:`register` marks a session with once the function is registered in it.
REGISTERED = "attnrec.exact_json.registered"
#: The jars the source compiles against (Spark's row and UDF interfaces, Jackson's streaming parser).
COMPILE_JARS = ("spark-sql-api_*.jar", "jackson-core-*.jar")

_unavailable_said = False


def return_type(fields: tuple[str, ...]) -> str:
    """The function's result: ``is_object`` then ``t_<field>``, ``s_<field>`` per field (:func:`jobs.clean.parse`)."""
    return "struct<is_object:boolean," + ",".join(f"t_{f}:string,s_{f}:string" for f in fields) + ">"


def jar_path(directory: str) -> Path:
    """The jar for this source and this pyspark: a changed source or an upgraded Spark compiles anew."""
    import pyspark

    digest = hashlib.sha256(SOURCE.read_bytes() + pyspark.__version__.encode()).hexdigest()[:12]
    return Path(directory) / f"attnrec-exact-json-{digest}.jar"


def build(target: Path) -> Path:
    """Compile the source into ``target`` (written whole, by rename); returns it. Raises RuntimeError naming the
    compiler's message when it fails."""
    import pyspark

    jars_dir = Path(pyspark.__file__).parent / "jars"
    classpath = []
    for pattern in COMPILE_JARS:
        found = sorted(jars_dir.glob(pattern))
        if not found:
            raise RuntimeError(f"no {pattern} in {jars_dir}; reinstall pyspark (make venv)")
        classpath.append(str(found[0]))
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("'java' is not on PATH (Spark needs Java 17 anyway)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="attnrec-exact-json-") as classes:
        command = [java, "-m", "jdk.compiler/com.sun.tools.javac.Main", "--release", "17", "-nowarn",
                   "-cp", os.pathsep.join(classpath), "-d", classes, str(SOURCE)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"compiling {SOURCE.name} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[:500]}"
            )
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            for path in sorted(Path(classes).rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
    os.replace(partial, target)
    return target


def register(spark, fields: tuple[str, ...], directory: str | None = None) -> bool:
    """Make :data:`FUNCTION` callable in ``spark`` (compiling the jar first if need be); False, after one line that
    says why, when it cannot. ``directory``: where the jar lives (default ``ATTNREC_SPARK_UDF_DIR``)."""
    global _unavailable_said
    from pyspark.errors import AnalysisException

    # a session flag, not spark.catalog.functionExists: looking up a function the session lacks initialises the
    # catalog, which creates ./spark-warehouse in the job's working directory
    if spark.conf.get(REGISTERED, None) == FUNCTION:
        return True
    if directory is None:
        from attnrec.settings import get_settings

        directory = get_settings().spark_udf_dir
    try:
        if not directory:
            raise RuntimeError("ATTNREC_SPARK_UDF_DIR is none")
        jar = jar_path(directory)
        if not jar.is_file():
            build(jar)
        spark.sql(f"ADD JAR '{jar}'")
        spark.udf.registerJavaFunction(FUNCTION, JAVA_CLASS, return_type(fields))
        spark.conf.set(REGISTERED, FUNCTION)
        return True
    except (RuntimeError, OSError, AnalysisException) as err:
        if not _unavailable_said:
            print(
                f"clean: the Java parse function is not available ({err}); parsing with Spark SQL instead (slower, the "
                "same outcome)",
                flush=True,
            )
            _unavailable_said = True
        return False
