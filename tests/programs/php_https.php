<?php
// PHP's two HTTPS clients over libssl: the https:// stream wrapper and the
// curl extension. Each POSTs a pattern body to nginx and checks the file it
// gets back (see pattern_body in tests/src/lib.rs).
//   php php_https.php PORT CAFILE
[$_, $port, $ca] = $argv;

function pattern(string $tag, int $n): string {
    $unit = $tag . '0123456789';
    return substr(str_repeat($unit, intdiv($n, strlen($unit)) + 1), 0, $n);
}

$ctx = stream_context_create([
    'ssl' => ['cafile' => $ca, 'peer_name' => 'localhost'],
    'http' => ['method' => 'POST', 'header' => "Content-Type: text/plain\r\n", 'content' => pattern('req', 1024)],
]);
$got = file_get_contents("https://localhost:$port/resp_1024", false, $ctx);
if ($got !== pattern('resp', 1024)) {
    fwrite(STDERR, "stream wrapper: unexpected answer\n");
    exit(1);
}

$ch = curl_init("https://localhost:$port/resp_102400");
curl_setopt_array($ch, [
    CURLOPT_CAINFO => $ca,
    CURLOPT_POSTFIELDS => pattern('req', 102400),
    CURLOPT_HTTPHEADER => ['Content-Type: text/plain', 'Expect:'],
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
]);
$got = curl_exec($ch);
if ($got !== pattern('resp', 102400) || curl_getinfo($ch, CURLINFO_RESPONSE_CODE) !== 200) {
    fwrite(STDERR, "curl extension: unexpected answer: " . curl_error($ch) . "\n");
    exit(1);
}
