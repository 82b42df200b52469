#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace cairn::storage {

// Every storage failure is a StorageError (or a subclass) whose what() names the backend
// and the failing statement, e.g.
//   "postgres: duplicate key value violates unique constraint "t_pkey" [in: INSERT INTO t ...]"
// Callers catch the typed subclasses below and never parse messages.
class StorageError : public std::runtime_error {
  public:
    StorageError(std::string_view backend, std::string_view message,
                 std::string_view statement = {});

    const std::string& backend() const noexcept { return backend_; }
    const std::string& message() const noexcept { return message_; }
    const std::string& statement() const noexcept { return statement_; }

  private:
    std::string backend_;
    std::string message_;
    std::string statement_;
};

// A UNIQUE or PRIMARY KEY constraint rejected a write (SQLSTATE 23505 / SQLITE_CONSTRAINT_UNIQUE).
class UniqueViolation : public StorageError {
    using StorageError::StorageError;
};

// A FOREIGN KEY, NOT NULL or CHECK constraint rejected a write.
class ConstraintViolation : public StorageError {
    using StorageError::StorageError;
};

// The transaction lost a race (serialization failure, deadlock, SQLite busy past its
// timeout). Nothing was written; running the whole transaction again may succeed.
class TransactionConflict : public StorageError {
    using StorageError::StorageError;
};

// The database could not be reached, or the connection broke. For a failure during
// COMMIT the outcome is unknown; the message says so.
class ConnectionError : public StorageError {
    using StorageError::StorageError;
};

// A configuration problem found before any connection was made: a malformed URL, an
// unknown option. Maps to exit code 2 in the CLI.
class ConfigError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace cairn::storage
