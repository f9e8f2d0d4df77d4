/*
** host.c -- the `nasrt` executable: a Lua 5.4 stand-alone interpreter
** (modelled on Lua's lua.c) with the nasrt library preloaded as the global
** `nasrt`, a thread-count option, and a REPL with line editing, history,
** Tab completion of nasrt.* and globals, and results printed (tensors as
** PyTorch shows them).
**
**     nasrt script.lua args...     run a script (arg[0] = script, arg[1..])
**     nasrt -e 'chunk' ...         run chunks (repeatable), then maybe a script
**     nasrt -                      run standard input as a script
**     nasrt                        REPL (silent line mode when stdin is a pipe)
**
** Every chunk runs through docall: lua_pcall with a traceback message
** handler.  Ctrl-C during a chunk sets a hook that raises "interrupted!" at
** the next Lua instruction (as lua.c does) and sets the runtime's abort flag
** so long C ops stop too; Ctrl-C at the prompt discards the line.
*/
#define _POSIX_C_SOURCE 200809L
#include "dist.h"
#include "luabind.h"

#include <ctype.h>
#include <errno.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#ifdef NASRT_USE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#ifndef NASRT_LUA_DIR
#define NASRT_LUA_DIR "lua"
#endif
#ifndef NASRT_BUILD_DIR
#define NASRT_BUILD_DIR "build"
#endif
/* install layout relative to the prefix (CMake's NASRT_INSTALL_* cache) */
#ifndef NASRT_INSTALL_LMOD
#define NASRT_INSTALL_LMOD "share/lua/5.4"
#endif
#ifndef NASRT_INSTALL_CMOD
#define NASRT_INSTALL_CMOD "lib/lua/5.4"
#endif

#define PROGNAME "nasrt"
#define PROMPT1 "nasrt> "
#define PROMPT2 ">> "
#define HISTORY_FILE ".nasrt_history"
#define HISTORY_MAX 1000
#define VERSION_LINE "nasrt " NR_VERSION " (Lua 5.4, OpenBLAS)"

static const char *progname = PROGNAME;
static lua_State *globalL = NULL;

/* ------------------------------------------------------------ messages */

static void print_usage(const char *badoption) {
    if (badoption[1] == 'e' || badoption[1] == 'l' || strcmp(badoption, "--threads") == 0)
        fprintf(stderr, "%s: '%s' needs an argument\n", progname, badoption);
    else
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, badoption);
    fprintf(stderr, "usage: %s [options] [script [args]]   (try '%s --help')\n", progname,
            progname);
    fflush(stderr);
}

static void print_help(void) {
    printf("%s\n"
           "usage: nasrt [options] [script [args]]\n"
           "       nasrt plot RUNDIR [--out DIR]   charts of a run directory (SVG, PNG)\n"
           "Runs Lua 5.4 with the nasrt library loaded as the global 'nasrt'.\n"
           "\n"
           "Options:\n"
           "  -e chunk       run the Lua string 'chunk' (may be repeated)\n"
           "  -l name        require library 'name' into the global 'name'\n"
           "  -i             enter the REPL after running the script and chunks\n"
           "  --threads N    threads for tensor ops (also --threads=N; default:\n"
           "                 $NASRT_THREADS, else all cores)\n"
           "  -v, --version  print the version (then run the script, if any)\n"
           "  -h, --help     print this help\n"
           "  -              run standard input as a script\n"
           "  --             stop handling options\n"
           "\n"
           "The script gets its arguments in the table 'arg' (arg[0] is the script)\n"
           "and as '...'.  A script that returns a recipe table {name=, defaults=,\n"
           "run=} is run by nasrt.recipe: --key=value options, --help, a run folder,\n"
           "--resume DIR.  Try: nasrt recipes/darts.lua --help (installed copies are\n"
           "in PREFIX/share/nasrt/recipes).\n"
           "\n"
           "With no script and no -e, nasrt starts the REPL (also after -i):\n"
           "  expr           shows the value: tensors as PyTorch prints them, modules\n"
           "                 as a layer tree with parameter counts, supernets as a\n"
           "                 summary (cells, edges, ops, parameters, FLOPs), samplers,\n"
           "                 optimizers and tables with their settings\n"
           "  =expr          the same as 'return expr'\n"
           "  help(obj)      the doc of a function, class or object; help() lists these\n"
           "  time(fn, ...)  runs fn, prints its wall and CPU time\n"
           "  %%time stmt     times one statement or expression\n"
           "  :load RUNDIR   run = nasrt.run.load(RUNDIR), when nasrt.run exists\n"
           "Tab completes globals, nasrt.*, fields (net.<Tab>) and methods (t:<Tab>);\n"
           "history is kept in ~/" HISTORY_FILE ".  Ctrl-C discards the line or stops a\n"
           "running chunk, Ctrl-D quits.  When standard input is not a terminal the\n"
           "REPL reads lines without prompts and exits with status 1 if any chunk\n"
           "failed.\n"
           "\n"
           "Under mpirun or srun each process is one rank of nasrt.dist (MPI); the\n"
           "default thread count is then the cores divided by the ranks per machine.\n"
           "\n"
           "Environment: NASRT_THREADS (thread count); NASRT_LUA_DIR (the folder\n"
           "holding nasrt/*.lua) and NASRT_BUILD_DIR (the folder whose lua/ holds\n"
           "nasrt/core.so) override where the library is found: by default the\n"
           "installed prefix next to the binary (PREFIX/share/lua/5.4), else the\n"
           "source and build folders it was built from.\n",
           VERSION_LINE);
    fflush(stdout);
}

static void l_message(const char *pname, const char *msg) {
    if (pname) fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

/* Prints the error message on the top of the stack (if status is an error)
   and pops it. */
static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) msg = "(error object is not a string)";
        l_message(progname, msg);
        lua_pop(L, 1);
    }
    return status;
}

/* Message handler: adds a traceback to the error message. */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* -------------------------------------------------------------- signals */

static volatile sig_atomic_t prompt_sigint = 0;

static void set_handler(int sig, void (*handler)(int), int restart, struct sigaction *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, old);
}

/* Hook set by laction: stops the interpreter at the next instruction. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* SIGINT while a chunk runs: tell Lua (a hook, the only thing that is safe
   to set from a handler) and the C ops (the abort flag) to stop.  A second
   Ctrl-C kills the process, as in lua.c. */
static void laction(int sig) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    set_handler(sig, SIG_DFL, 1, NULL);
    nr_set_abort(1);
    lua_sethook(globalL, lstop, flag, 1);
}

/* SIGINT at the prompt: only a flag; the reader discards the line. */
static void prompt_action(int sig) {
    (void)sig;
    prompt_sigint = 1;
}

/* Runs the function under narg arguments with the traceback handler and the
   Ctrl-C handler installed. */
static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    nr_set_abort(0);
    struct sigaction old;
    set_handler(SIGINT, laction, 1, &old);
    int status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    /* an interrupt that a C op turned into an error leaves the hook set */
    if (lua_gethook(L) == lstop) lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

/* ------------------------------------------------------- running code */

static void createargtable(lua_State *L, char **argv, int argc, int script) {
    if (script == argc) script = 0; /* no script name: arg[0] is the program */
    int narg = argc - (script + 1);
    lua_createtable(L, narg > 0 ? narg : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l name: global[name] = require(name) */
static int dolibrary(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) {
        const char *g = strrchr(name, '.');
        lua_setglobal(L, g ? g + 1 : name);
    }
    return report(L, status);
}

/* Pushes the script's arguments (arg[1..]) on the stack. */
static int pushargs(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    int i;
    for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -i); /* the table */
    return n;
}

static int handle_script(lua_State *L, char **argv) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
    int top = lua_gettop(L);
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = docall(L, n, LUA_MULTRET);
    }
    /* A script that returns a recipe table {name=, defaults=, run=} is run
       by nasrt.recipe.main(recipe, arg): option parsing, --help, the run
       directory, Ctrl-C handling.  Specs load the same file and call run. */
    if (status == LUA_OK && lua_gettop(L) > top && lua_istable(L, top + 1)) {
        lua_getfield(L, top + 1, "run");
        int isrecipe = lua_isfunction(L, -1);
        lua_pop(L, 1);
        if (isrecipe) {
            lua_getglobal(L, "require");
            lua_pushstring(L, "nasrt.recipe");
            status = docall(L, 1, 1);
            if (status == LUA_OK) {
                lua_getfield(L, -1, "main");
                lua_remove(L, -2);
                lua_pushvalue(L, top + 1);
                lua_getglobal(L, "arg");
                status = docall(L, 2, 0);
            }
        }
    }
    if (status == LUA_OK) lua_settop(L, top);
    return report(L, status);
}

/* `nasrt plot RUNDIR ...`: a subcommand is the main(arg) of a Lua module
   (nasrt.plot); arg[1..] are the words after the subcommand.  A file of
   that name in the current directory is run as a script instead. */
static const char *const subcommands[][2] = {{"plot", "nasrt.plot"}, {NULL, NULL}};

static const char *subcommand_module(const char *word) {
    for (int i = 0; subcommands[i][0]; i++)
        if (strcmp(word, subcommands[i][0]) == 0 && access(word, F_OK) != 0)
            return subcommands[i][1];
    return NULL;
}

/* A subcommand's own messages (errors raised at level 0, with no
   "file:line:" in front) are for the user and go out without the
   traceback; anything else gets it. */
static int positioned(const char *m) {
    const char *c = strchr(m, ':');
    if (!c || c == m || memchr(m, ' ', (size_t)(c - m)) || !isdigit((unsigned char)c[1])) return 0;
    while (isdigit((unsigned char)*++c)) {}
    return *c == ':';
}

static int handle_subcommand(lua_State *L, const char *module) {
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) {
        lua_getfield(L, -1, "main");
        lua_remove(L, -2);
        lua_getglobal(L, "arg");
        status = docall(L, 1, 0);
    }
    if (status != LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
        const char *m = lua_tostring(L, -1), *tb = strstr(m, "\nstack traceback:");
        if (tb && !positioned(m)) {
            lua_pushlstring(L, m, (size_t)(tb - m));
            lua_remove(L, -2);
        }
    }
    return report(L, status);
}

/* ------------------------------------------------------ option parsing */

#define HAS_ERROR 1
#define HAS_I 2
#define HAS_V 4
#define HAS_E 8
#define HAS_H 16

/* Scans the options before the script.  *first is the script's index (argc
   when there is none; the bad option's index on HAS_ERROR).  --threads N
   sets *nthreads. */
static int collectargs(int argc, char **argv, int *first, int *nthreads) {
    int args = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        *first = i;
        if (a[0] != '-') return args; /* the script */
        if (a[1] == '\0') return args; /* "-": stdin */
        if (strcmp(a, "--") == 0) {
            *first = i + 1;
            return args;
        }
        if (strcmp(a, "--threads") == 0 || strncmp(a, "--threads=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : argv[i + 1];
            if (a[9] != '=') {
                if (v == NULL) return HAS_ERROR;
                i++;
            }
            char *end;
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || n < 1 || n > 1024) {
                fprintf(stderr, "%s: --threads wants a positive integer, got '%s'\n", progname,
                        v);
                *first = -1;
                return HAS_ERROR;
            }
            *nthreads = (int)n;
            continue;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
            args |= HAS_V;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args |= HAS_H;
            continue;
        }
        if (strcmp(a, "-i") == 0) {
            args |= HAS_I;
            continue;
        }
        if (a[1] == 'e' || a[1] == 'l') {
            if (a[1] == 'e') args |= HAS_E;
            if (a[2] == '\0') { /* the argument is the next word */
                i++;
                if (i >= argc || argv[i] == NULL || argv[i][0] == '-') return HAS_ERROR;
            }
            continue;
        }
        return HAS_ERROR;
    }
    *first = argc;
    return args;
}

/* Runs -e and -l in order.  0 on the first failure. */
static int runargs(lua_State *L, char **argv, int n) {
    for (int i = 1; i < n; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--threads") == 0) {
            i++;
            continue;
        }
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
        const char *extra = a + 2;
        if (*extra == '\0') extra = argv[++i];
        int status = a[1] == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
        if (status != LUA_OK) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------- line input */

static int stdin_is_tty(void) { return isatty(STDIN_FILENO); }

#ifdef NASRT_USE_READLINE
static int use_readline = 0;
static char history_path[4096];

/* readline's callback interface, so that Ctrl-C at the prompt can abandon
   the line (readline() itself restarts its read after a signal). */
static char *cb_line;
static int cb_done;

static void cb_handler(char *line) {
    cb_line = line;
    cb_done = 1;
    rl_callback_handler_remove();
}

/* 1: *out is a malloc'ed line; 0: end of input; 2: interrupted. */
static int rl_getline(const char *prompt, char **out) {
    cb_line = NULL;
    cb_done = 0;
    rl_callback_handler_install(prompt, cb_handler);
    int fd = fileno(rl_instream ? rl_instream : stdin);
    while (!cb_done) {
        if (prompt_sigint) {
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_cleanup_after_signal();
            rl_callback_handler_remove();
            fputs("\n", stdout);
            fflush(stdout);
            return 2;
        }
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(fd, &fds);
        int r = select(fd + 1, &fds, NULL, NULL, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            rl_callback_handler_remove();
            return 0;
        }
        rl_callback_read_char();
    }
    if (!cb_line) {
        fputs("\n", stdout);
        return 0;
    }
    *out = cb_line;
    return 1;
}
#endif

/* Reads one line without its newline.  1: *out is a malloc'ed line; 0: end
   of input; 2: interrupted by Ctrl-C. */
static int read_line(const char *prompt, char **out) {
    prompt_sigint = 0;
    struct sigaction old;
    set_handler(SIGINT, prompt_action, 0, &old);
    int r;
#ifdef NASRT_USE_READLINE
    if (use_readline) {
        r = rl_getline(prompt, out);
        sigaction(SIGINT, &old, NULL);
        return r;
    }
#endif
    int tty = stdin_is_tty();
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        r = prompt_sigint ? 2 : 0;
        clearerr(stdin);
        if (tty) fputs("\n", stdout);
    } else {
        if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
        *out = line;
        r = 1;
    }
    sigaction(SIGINT, &old, NULL);
    return r;
}

static void save_line(const char *line) {
#ifdef NASRT_USE_READLINE
    if (!use_readline || line[0] == '\0') return;
    add_history(line);
    if (history_path[0] && append_history(1, history_path) != 0)
        write_history(history_path); /* the file did not exist yet */
#else
    (void)line;
#endif
}

/* ------------------------------------------------------ tab completion */

#ifdef NASRT_USE_READLINE
/* The candidates come from nasrt.repl.complete (raw lookups only, so Tab
   never runs a metamethod); a failure there just completes nothing. */
static char **matches = NULL;
static size_t nmatches = 0;

static void collect_matches(lua_State *L, const char *text) {
    for (size_t i = 0; i < nmatches; i++) free(matches[i]);
    free(matches);
    matches = NULL;
    nmatches = 0;
    if (!L || !lua_checkstack(L, 8)) return;
    int top = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "nasrt.repl") == LUA_TTABLE &&
        lua_getfield(L, -1, "complete") == LUA_TFUNCTION) {
        lua_pushstring(L, text);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
            size_t n = (size_t)lua_rawlen(L, -1);
            matches = n ? calloc(n, sizeof *matches) : NULL;
            for (size_t i = 0; matches && i < n; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i + 1);
                const char *m = lua_tostring(L, -1);
                if (m && (matches[nmatches] = strdup(m)) != NULL) nmatches++;
                lua_pop(L, 1);
            }
        }
    }
    lua_settop(L, top);
}

static char *completion_generator(const char *text, int state) {
    static size_t next;
    (void)text;
    if (state == 0) next = 0;
    if (next < nmatches) return strdup(matches[next++]);
    return NULL;
}

static char **nasrt_completion(const char *text, int start, int end) {
    (void)start;
    (void)end;
    if (rl_completion_quote_character) return NULL; /* inside a string: file names */
    rl_attempted_completion_over = 1;
    rl_completion_append_character = '\0';
    collect_matches(globalL, text);
    if (nmatches == 0) return NULL;
    return rl_completion_matches(text, completion_generator);
}

static void init_readline(void) {
    use_readline = 1;
    rl_readline_name = "nasrt";
    rl_attempted_completion_function = nasrt_completion;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(),+-*/%^~#[]}";
    rl_completer_quote_characters = "\"'";
    const char *home = getenv("HOME");
    history_path[0] = '\0';
    if (home && home[0] &&
        snprintf(history_path, sizeof history_path, "%s/" HISTORY_FILE, home) <
            (int)sizeof history_path) {
        using_history();
        stifle_history(HISTORY_MAX);
        read_history(history_path);
        history_truncate_file(history_path, HISTORY_MAX);
    } else
        history_path[0] = '\0';
}
#endif

/* ---------------------------------------------------------------- REPL */

/* A syntax error that ends at <eof> means the chunk is incomplete. */
static int incomplete(lua_State *L, int status) {
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        const char *mark = "<eof>";
        size_t ml = strlen(mark);
        if (lmsg >= ml && strcmp(msg + lmsg - ml, mark) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

#define LINE_EOF 0
#define LINE_OK 1
#define LINE_INTR 2

/* A first line starting with '%' or ':' (but not a "::label::") is a
   shortcut that nasrt.repl.rewrite turns into Lua ("%time stmt", ":load
   DIR"; an unknown one becomes an error() call); pushes the chunk. */
static void push_shortcut(lua_State *L, const char *line) {
    int top = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "nasrt.repl") == LUA_TTABLE &&
        lua_getfield(L, -1, "rewrite") == LUA_TFUNCTION) {
        lua_pushstring(L, line);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1)) {
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return;
        }
    }
    lua_settop(L, top);
    lua_pushstring(L, line);
}

/* set when the chunk came from a shortcut: its line is already in the
   history, not the Lua it became */
static int shortcut_line = 0;

/* Pushes the next line (a leading '=' becomes "return ", shortcuts are
   rewritten).  LINE_OK, LINE_EOF or LINE_INTR (nothing pushed then). */
static int pushline(lua_State *L, int firstline) {
    char *b = NULL;
    int r = read_line(firstline ? PROMPT1 : PROMPT2, &b);
    if (r != LINE_OK) return r;
    if (firstline) shortcut_line = 0;
    if (firstline && b[0] == '=') lua_pushfstring(L, "return %s", b + 1);
    else if (firstline && (b[0] == '%' || (b[0] == ':' && b[1] != ':'))) {
        save_line(b);
        shortcut_line = 1;
        push_shortcut(L, b);
    } else
        lua_pushstring(L, b);
    free(b);
    return LINE_OK;
}

/* Tries the line as an expression ("return line;"). */
static int addreturn(lua_State *L) {
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2); /* the modified line */
        if (line[0] != '\0' && !shortcut_line) save_line(line);
    } else
        lua_pop(L, 2); /* the result and the modified line */
    return status;
}

/* Reads more lines while the chunk is incomplete.  -2 when Ctrl-C
   abandoned it. */
static int multiline(lua_State *L) {
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status)) {
            if (!shortcut_line) save_line(line);
            return status;
        }
        int r = pushline(L, 0);
        if (r == LINE_INTR) return -2;
        if (r == LINE_EOF) { /* report the incomplete chunk's error */
            status = luaL_loadbuffer(L, line, len, "=stdin");
            if (!shortcut_line) save_line(line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Leaves a compiled chunk on the stack.  -1 at end of input, -2 when the
   line was abandoned, else the load status. */
static int loadline(lua_State *L) {
    lua_settop(L, 0);
    int r = pushline(L, 1);
    if (r == LINE_EOF) return -1;
    if (r == LINE_INTR) return -2;
    int status = addreturn(L);
    if (status != LUA_OK) status = multiline(L);
    if (status == -2) {
        lua_settop(L, 0);
        return -2;
    }
    lua_remove(L, 1); /* the line */
    return status;
}

/* Prints the chunk's results with nasrt.repl.print (tensors the PyTorch
   way, modules as a tree with parameter counts, supernets as a summary),
   or with the global print when nasrt.repl could not be loaded. */
static int l_print(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0) return LUA_OK;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    if (lua_getfield(L, LUA_REGISTRYINDEX, "nasrt.repl") == LUA_TTABLE) {
        lua_getfield(L, -1, "print");
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_getglobal(L, "print");
    }
    lua_insert(L, 1);
    int status = docall(L, n, 0);
    if (status != LUA_OK) {
        l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
        lua_pop(L, 2);
    }
    return status;
}

/* Loads nasrt.repl, keeps it in the registry for the reader, printer and
   completer, and sets the REPL globals (help, time).  Without it the REPL
   still works, with print and no completion. */
static void open_repl(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nasrt.repl");
    if (docall(L, 1, 1) != LUA_OK || !lua_istable(L, -1)) {
        l_message(PROGNAME, lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "install");
    if (docall(L, 0, 0) != LUA_OK) {
        l_message(PROGNAME, lua_tostring(L, -1));
        lua_pop(L, 2);
        return;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "nasrt.repl");
}

/* Returns the number of chunks that failed. */
static int doREPL(lua_State *L) {
    const char *oldprogname = progname;
    int failures = 0;
    progname = NULL;
    globalL = L;
    open_repl(L);
#ifdef NASRT_USE_READLINE
    if (stdin_is_tty() && isatty(STDOUT_FILENO)) init_readline();
#endif
    int status;
    while ((status = loadline(L)) != -1) {
        if (status == -2) continue;
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) status = l_print(L);
        else report(L, status);
        if (status != LUA_OK) failures++;
        fflush(stdout);
    }
    lua_settop(L, 0);
    progname = oldprogname;
    return failures;
}

/* --------------------------------------------------------------- setup */

/* Where the nasrt Lua files (lua) and C modules (cmod) are: from
   $NASRT_LUA_DIR and $NASRT_BUILD_DIR when set; else next to an installed
   binary (PREFIX/bin/nasrt finds PREFIX/share/lua/5.4 and
   PREFIX/lib/lua/5.4, so the prefix can be moved); else the source and
   build folders this binary was built from.  gen is a second Lua folder
   (the build's generated files, e.g. nasrt/cdoc.lua), or "". */
static void find_dirs(char *lua, char *cmod, char *gen, size_t n) {
    const char *luadir = getenv("NASRT_LUA_DIR");
    const char *builddir = getenv("NASRT_BUILD_DIR");
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = len > 0 ? (exe[len] = '\0', strrchr(exe, '/')) : NULL;
    if (slash && !(luadir && luadir[0]) && !(builddir && builddir[0])) {
        *slash = '\0'; /* exe is now PREFIX/bin */
        char probe[4096 + 64];
        snprintf(probe, sizeof probe, "%s/../" NASRT_INSTALL_LMOD "/nasrt/init.lua", exe);
        if (access(probe, R_OK) == 0) {
            snprintf(lua, n, "%s/../" NASRT_INSTALL_LMOD, exe);
            snprintf(cmod, n, "%s/../" NASRT_INSTALL_CMOD, exe);
            gen[0] = '\0';
            return;
        }
    }
    if (!luadir || !luadir[0]) luadir = NASRT_LUA_DIR;
    if (!builddir || !builddir[0]) builddir = NASRT_BUILD_DIR;
    snprintf(lua, n, "%s", luadir);
    snprintf(cmod, n, "%s/lua", builddir);
    snprintf(gen, n, "%s/lua", builddir);
}

/* package.path/cpath find the nasrt library first; nasrt.core is linked in;
   global nasrt = require "nasrt". */
static int open_nasrt(lua_State *L) {
    char lua[8192], cmod[8192], gen[8192];
    find_dirs(lua, cmod, gen, sizeof lua);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    if (gen[0])
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s", lua, lua, gen,
                        lua_tostring(L, -1));
    else
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lua, lua, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/?.so;%s", cmod, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 2);

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_nasrt_core);
    lua_setfield(L, -2, "nasrt.core");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "nasrt");
    int status = docall(L, 1, 1);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: cannot load the nasrt library: %s\n", PROGNAME,
                msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
        return 0;
    }
    lua_setglobal(L, "nasrt");
    return 1;
}

/* Runs in protected mode (so memory errors are caught): argument handling,
   library setup, then script / chunks / REPL.  Pushes true on success. */
static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script = argc, nthreads = 0;
    int args = collectargs(argc, argv, &script, &nthreads);
    luaL_checkversion(L);
    if (args == HAS_ERROR) {
        if (script >= 0) print_usage(argv[script]);
        return 0;
    }
    if (args & HAS_H) {
        print_help();
        lua_pushboolean(L, 1);
        return 1;
    }
    if (args & HAS_V) {
        printf("%s\n", VERSION_LINE);
        fflush(stdout);
    }

    /* under mpirun / srun: MPI first (before the pool's threads), and by
       default the cores shared among the ranks on this machine */
    if (nr_dist_launched()) {
        if (nr_dist_init() != NR_OK) {
            l_message(progname, nr_lasterror());
            return 0;
        }
        atexit(nr_dist_finalize); /* os.exit() from a script */
        const char *env = getenv("NASRT_THREADS");
        if (nthreads == 0 && !(env && env[0])) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            long per = cores / nr_dist_local_size();
            nthreads = per >= 1 ? (int)per : 1;
        }
    }

    /* worker threads inherit a blocked SIGINT, so Ctrl-C reaches the main
       thread, the only one that may touch the lua_State */
    sigset_t ss, oldss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    pthread_sigmask(SIG_BLOCK, &ss, &oldss);
    nr_runtime_init(nthreads);
    pthread_sigmask(SIG_SETMASK, &oldss, NULL);

    luaL_openlibs(L);
    createargtable(L, argv, argc, script);
    lua_gc(L, LUA_GCRESTART);
    if (!open_nasrt(L)) return 0;
    if (!runargs(L, argv, script)) return 0;
    if (script < argc) {
        const char *module = subcommand_module(argv[script]);
        if (module ? handle_subcommand(L, module) != LUA_OK
                   : handle_script(L, argv + script) != LUA_OK)
            return 0;
    }
    int failures = 0;
    if ((args & HAS_I) || (script == argc && !(args & (HAS_E | HAS_V)))) {
        if (stdin_is_tty()) {
            printf("%s, %d threads -- help() for help, Tab completes, Ctrl-D quits\n", VERSION_LINE,
                   nr_num_threads());
            fflush(stdout);
        }
        failures = doREPL(L);
    }
    if (failures > 0 && !stdin_is_tty()) return 0;
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        l_message(PROGNAME, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP); /* no GC while building the state */
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int result = lua_toboolean(L, -1);
    report(L, status);
    int ok = result && status == LUA_OK;
    /* a failed rank ends the whole job, so the others do not wait in a
       collective forever */
    if (!ok) nr_dist_abort(EXIT_FAILURE);
    lua_close(L);
    nr_dist_finalize();
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
