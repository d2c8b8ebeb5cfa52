<?php
// The application side of tests/tests/resp_libraries.rs: PHP's own session functions on
// phpredis's `redis` save handler, which the test points at sessiond's RESP listener with
// `-d session.save_handler=redis -d session.save_path=tcp://HOST:PORT`. The test chooses a
// step with `?do=`, sends the session cookie it was given, and checks both the JSON each
// step prints and what the store holds afterwards.
//
// A step that sees anything go wrong answers 500 with the reason: a warning or notice (the
// handler reports failed reads, writes and lock releases as warnings, and PHP otherwise goes
// on with an empty session), or a session function returning false.

declare(strict_types=1);

set_error_handler(function (int $level, string $message, string $file, int $line): bool {
    fail("PHP error $level: $message ($file:$line)");
});

function fail(string $reason): never
{
    http_response_code(500);
    header('Content-Type: text/plain');
    echo $reason, "\n";
    exit(1);
}

function reply(array $body): void
{
    header('Content-Type: application/json');
    echo json_encode($body, JSON_THROW_ON_ERROR), "\n";
}

function start(): void
{
    if (!session_start()) {
        fail('session_start() failed');
    }
}

// Writes the session now rather than at shutdown, where a failure could no longer change
// the response; with locking on, this also releases the lock.
function close(): void
{
    if (!session_write_close()) {
        fail('session_write_close() failed');
    }
}

switch ($_GET['do'] ?? '') {
    // A new session (or the one the cookie names), holding `created`.
    case 'start':
        start();
        $_SESSION['created'] = $_SESSION['created'] ?? time();
        $id = session_id();
        close();
        reply(['id' => $id]);
        break;

    // Adds `key` to the session after holding it open for `sleep_ms`: two of these on one
    // session overlap, and only the save handler's lock keeps one from overwriting the other.
    case 'add':
        $key = $_GET['key'] ?? fail('add needs a key');
        $sleep_ms = (int) ($_GET['sleep_ms'] ?? 0);
        start();
        $began = microtime(true);
        usleep($sleep_ms * 1000);
        $_SESSION[$key] = $key;
        $id = session_id();
        $session = $_SESSION;
        close();
        reply(['id' => $id, 'session' => $session, 'began' => $began]);
        break;

    case 'read':
        start();
        $session = $_SESSION;
        close();
        reply(['id' => session_id(), 'session' => $session]);
        break;

    // A login: a new id for the same data, and the old session deleted.
    case 'regenerate':
        start();
        $old = session_id();
        if (!session_regenerate_id(true)) {
            fail('session_regenerate_id() failed');
        }
        $new = session_id();
        $_SESSION['regenerated'] = true;
        close();
        reply(['old' => $old, 'new' => $new]);
        break;

    // A logout.
    case 'destroy':
        start();
        $id = session_id();
        if (!session_destroy()) {
            fail('session_destroy() failed');
        }
        reply(['destroyed' => $id]);
        break;

    default:
        fail('unknown step');
}
