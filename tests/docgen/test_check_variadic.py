"""`docgen check` and variadic signatures: a doc may name parameters a signature takes through
*args/**kwargs, `...rest` or JS `arguments`; Java varargs names are parameters."""
from __future__ import annotations

from app.docgen.chunker import chunk_source
from app.docgen.doccheck import CheckOutcome, check_plan
from app.docgen.planner import make_plan

PY = '''
def evolve(*args, **changes):
    """Create a new instance, based on the first positional argument with changes applied.

    Args:
        inst: Instance of a class with attrs attributes.
        changes: Keyword changes in the new copy.
    """


def fixed(a):
    """Do it.

    Args:
        inst: not a parameter.
    """
'''

JS = '''
/**
 * Check if the given `type(s)` is acceptable.
 *
 * @param {String|Array} type(s)...
 * @return {String|Array|Boolean}
 * @public
 */
exports.accepts = function(){
  var accept = accepts(this);
  return accept.types.apply(accept, arguments);
};

/**
 * Fixed.
 * @param {String} name
 */
exports.fixed = function(other){
  return other;
};
'''

JAVA = '''
public final class GsonBuilder {
  /**
   * Configures Gson to apply the passed in exclusion strategies.
   *
   * @param strategies the set of strategy object to apply.
   * @return a reference to this {@code GsonBuilder} object.
   */
  public GsonBuilder setExclusionStrategies(ExclusionStrategy... strategies) {
    return this;
  }

  /**
   * @param ghost not there.
   */
  public GsonBuilder other(int count, String... names) {
    return this;
  }
}
'''


def test_java_varargs_parameter_names_are_extracted():
    units = {u.qualname: u for u in chunk_source("GsonBuilder.java", "java", JAVA).units}
    assert units["GsonBuilder.setExclusionStrategies"].params == ["strategies"]
    assert units["GsonBuilder.other"].params == ["count", "names"]


def test_variadic_signatures_are_not_reported_stale(tmp_path):
    (tmp_path / "attrs.py").write_text(PY)
    (tmp_path / "request.js").write_text(JS)
    (tmp_path / "GsonBuilder.java").write_text(JAVA)
    out = CheckOutcome()
    check_plan(make_plan(tmp_path), "", out)
    stale = sorted(f.name for f in out.stale)
    # The fixed-arity ones with a made-up parameter are still stale: the check is not switched off.
    # Java varargs are named (`String... names`), so `@param ghost` is still stale there.
    assert stale == ["GsonBuilder.other", "fixed", "fixed"]
