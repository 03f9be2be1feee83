/* A shared library that is no Falco plugin. */
int answer(void) { return 42; }
