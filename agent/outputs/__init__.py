"""Alert outputs: each takes alerts and delivers them somewhere; none knows a source or the engine."""
