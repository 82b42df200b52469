// The heuristic analyser's skill taxonomy: canonical skill names, the words that point to
// them, and a short checklist per skill that becomes the moderator's helpful notes.

#include "plugins/ticket/ai.hpp"

namespace cairn::ticket {

const std::vector<Skill>& skill_taxonomy() {
    static const std::vector<Skill> skills = {
        // ---- languages ----
        {"javascript", {"js", "ecmascript", "es6", "vanilla js"}, {"Note the browser or Node.js version and any console errors."}},
        {"typescript", {"ts", "tsc", "type error"}, {"Check the tsconfig strictness and the compiler version."}},
        {"python", {"py", "pip", "django", "flask", "fastapi", "pandas"}, {"Ask for the Python version and the full traceback."}},
        {"java", {"jvm", "spring", "spring boot", "maven", "gradle"}, {"Ask for the JVM version and the stack trace."}},
        {"c++", {"cpp", "cmake", "segfault", "segmentation fault"}, {"Ask for the compiler, flags and a core dump or sanitizer report."}},
        {"c#", {"csharp", ".net", "dotnet", "asp.net"}, {"Ask for the .NET runtime version and the exception detail."}},
        {"go", {"golang", "goroutine"}, {"Ask for the Go version and a goroutine dump if it hangs."}},
        {"rust", {"cargo", "rustc", "borrow checker"}, {"Ask for rustc --version and the full compiler output."}},
        {"php", {"laravel", "symfony", "wordpress", "composer"}, {"Check the PHP version and the web server error log."}},
        {"ruby", {"rails", "ruby on rails", "gem", "bundler"}, {"Ask for the Ruby and Rails versions and the log excerpt."}},
        {"kotlin", {"ktor"}, {"Check the Kotlin and Gradle plugin versions."}},
        {"swift", {"swiftui", "xcode"}, {"Ask for the Xcode and iOS versions."}},
        {"bash", {"shell", "shell script", "zsh", "cron job", "crontab"}, {"Run the script with set -x and share the output."}},
        // ---- front end ----
        {"react", {"reactjs", "react.js", "jsx", "next.js", "nextjs", "redux", "hooks"}, {"Check the React version and the component stack in the console."}},
        {"vue", {"vuejs", "vue.js", "nuxt", "vuex", "pinia"}, {"Check the Vue version and devtools warnings."}},
        {"angular", {"angularjs", "rxjs"}, {"Check the Angular version and the change-detection path."}},
        {"html", {"markup", "dom"}, {"Validate the markup and check for duplicate ids."}},
        {"css", {"stylesheet", "tailwind", "sass", "scss", "layout", "flexbox", "styling"}, {"Reproduce in two browsers; note the viewport size."}},
        {"accessibility", {"a11y", "screen reader", "wcag", "aria", "contrast"}, {"Test with a screen reader and keyboard-only navigation."}},
        {"frontend", {"front-end", "front end", "ui", "user interface", "browser", "page", "button", "form"}, {"Ask for the browser, a screenshot and the steps to reproduce."}},
        // ---- back end and APIs ----
        {"node.js", {"node", "nodejs", "npm", "express", "expressjs", "yarn", "pnpm"}, {"Check the Node.js version and unhandled promise rejections."}},
        {"backend", {"back-end", "back end", "server", "server error", "500 error", "internal server error"}, {"Find the request id and read the server log around it."}},
        {"api", {"rest", "rest api", "endpoint", "http api", "webhook", "status code"}, {"Ask for the request, the response status and body."}},
        {"graphql", {"apollo", "gql", "resolver"}, {"Ask for the query, variables and the error path."}},
        {"grpc", {"protobuf", "protocol buffers"}, {"Check the proto versions on both sides."}},
        {"websocket", {"websockets", "socket.io", "ws", "real-time", "realtime"}, {"Check proxies for upgrade support and idle timeouts."}},
        {"microservices", {"service mesh", "istio", "distributed system"}, {"Trace the request across services by its id."}},
        {"message queues", {"kafka", "rabbitmq", "queue", "sqs", "pubsub", "nats"}, {"Check consumer lag and dead-letter queues."}},
        {"caching", {"cache", "redis", "memcached", "cdn", "stale data"}, {"Check cache keys and TTLs; try with the cache bypassed."}},
        {"search", {"elasticsearch", "opensearch", "solr", "full-text search"}, {"Check the index mapping and the query analyser."}},
        // ---- data ----
        {"sql", {"query", "join", "stored procedure", "sql query"}, {"Ask for the query and its EXPLAIN plan."}},
        {"postgresql", {"postgres", "psql", "pg", "pgbouncer"}, {"Check pg_stat_activity for locks and long transactions."}},
        {"mysql", {"mariadb", "innodb"}, {"Check the slow query log and lock waits."}},
        {"mongodb", {"mongo", "mongoose", "atlas"}, {"Check indexes with explain() and the replica set state."}},
        {"sqlite", {"sqlite3"}, {"Check for a locked database and the journal mode."}},
        {"database", {"db", "migration", "schema", "table", "deadlock", "transaction"}, {"Take a backup before any fix; check recent migrations."}},
        {"data engineering", {"etl", "pipeline", "airflow", "spark", "data warehouse", "bigquery", "snowflake"}, {"Find the failed job run and its input partition."}},
        {"data analysis", {"analytics", "report", "dashboard", "excel", "spreadsheet", "metrics report"}, {"Confirm the date range and the filters used."}},
        {"machine learning", {"ml", "model", "training", "tensorflow", "pytorch", "scikit-learn", "prediction"}, {"Note the model version and the input that misbehaves."}},
        {"ai", {"llm", "chatbot", "openai", "gemini", "gpt", "prompt", "embedding"}, {"Capture the prompt and the model's raw answer."}},
        // ---- infrastructure ----
        {"devops", {"ci", "cd", "ci/cd", "pipeline failed", "github actions", "jenkins", "gitlab ci", "build failed"}, {"Link the failing job and the last green commit."}},
        {"docker", {"container", "dockerfile", "docker compose", "docker-compose", "image"}, {"Ask for the image tag and docker logs."}},
        {"kubernetes", {"k8s", "kubectl", "helm", "pod", "crashloopbackoff", "ingress"}, {"Check pod events and restarts with kubectl describe."}},
        {"aws", {"amazon web services", "ec2", "s3", "lambda", "cloudfront", "rds", "iam"}, {"Note the region and check the service health dashboard."}},
        {"azure", {"microsoft azure", "azure devops", "app service"}, {"Note the subscription and region; check service health."}},
        {"gcp", {"google cloud", "cloud run", "gke", "firebase"}, {"Note the project and region; check the status page."}},
        {"linux", {"ubuntu", "debian", "centos", "systemd", "kernel", "permission denied"}, {"Check journalctl and disk space (df -h)."}},
        {"networking", {"network", "dns", "latency", "timeout", "vpn", "firewall", "proxy", "load balancer", "packet loss"}, {"Run a traceroute and check DNS resolution from the client."}},
        {"performance", {"slow", "slowness", "lag", "high cpu", "memory leak", "out of memory", "oom", "bottleneck"}, {"Get timings before and after; profile the slow path."}},
        {"monitoring", {"logging", "logs", "alert", "alerting", "prometheus", "grafana", "observability", "tracing"}, {"Check whether the alert fired and who was paged."}},
        {"git", {"github", "gitlab", "merge conflict", "pull request", "branch", "rebase"}, {"Ask for the branch, the commit and git status output."}},
        // ---- security and identity ----
        {"security", {"vulnerability", "breach", "hacked", "exploit", "xss", "csrf", "sql injection", "cve", "malware", "phishing", "leak"}, {"Treat as confidential; preserve logs and rotate exposed secrets."}},
        {"authentication", {"login", "log in", "sign in", "signin", "password", "2fa", "mfa", "sso", "oauth", "jwt", "session", "locked out", "reset password"}, {"Check the auth logs for the account and recent lockouts."}},
        {"authorization", {"permission", "permissions", "access denied", "forbidden", "403", "role", "rbac"}, {"Compare the user's role with what the action needs."}},
        {"encryption", {"tls", "ssl", "certificate", "https", "cert expired"}, {"Check certificate expiry and the chain with openssl s_client."}},
        {"compliance", {"gdpr", "hipaa", "pci", "soc 2", "audit", "data retention"}, {"Loop in the compliance owner before changing data."}},
        // ---- business domains ----
        {"billing", {"payment", "payments", "invoice", "charge", "charged", "refund", "subscription", "credit card", "stripe", "paypal", "pricing"}, {"Find the transaction id; never ask for full card numbers."}},
        {"email", {"smtp", "mail", "newsletter", "bounce", "spam folder", "inbox", "notification email"}, {"Check the mail provider's logs for the message id."}},
        {"mobile", {"ios", "android", "iphone", "app store", "play store", "react native", "flutter", "mobile app"}, {"Ask for the device, OS version and app build."}},
        {"windows", {"windows 10", "windows 11", "powershell", "active directory"}, {"Check the event viewer around the time of the failure."}},
        {"macos", {"mac", "macbook", "osx", "homebrew"}, {"Ask for the macOS version and Console logs."}},
        {"hardware", {"laptop", "printer", "monitor", "keyboard", "mouse", "battery", "device", "docking station"}, {"Ask for the model and serial number; try another port."}},
        {"office software", {"microsoft office", "word", "outlook", "teams", "slack", "zoom", "google docs"}, {"Note the app version; try the web version."}},
        {"testing", {"test", "tests", "unit test", "flaky test", "qa", "selenium", "cypress", "playwright", "regression"}, {"Get the failing test name and whether it fails locally."}},
        {"documentation", {"docs", "readme", "typo", "guide", "tutorial", "wiki"}, {"Link the page and the wrong passage."}},
        {"ux design", {"ux", "design", "figma", "usability", "wireframe", "mockup"}, {"Ask what the user expected to happen."}},
        {"localization", {"i18n", "l10n", "translation", "language", "locale", "timezone", "time zone"}, {"Note the locale and timezone of the user."}},
        {"seo", {"search engine", "google ranking", "sitemap", "meta tags"}, {"Check the robots.txt and the search console."}},
        {"customer support", {"account", "profile", "subscription cancel", "onboarding", "how do i", "question"}, {"Confirm the account email and plan."}},
    };
    return skills;
}

}  // namespace cairn::ticket
